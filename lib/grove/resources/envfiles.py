"""``.ports.env`` and the merged env files, with python-dotenv's parser and semantics.

A key is replaced in place (every occurrence, since dotenv lets the last one win), missing keys
are appended once, comments and order stay. The same input gives byte-identical output.
Env values are never printed.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..core import locks
from ..core.errors import GroveError, bad_input
from .shape import Agent, Outcome, Resource

SECRET_MODE = 0o600
PORTS_FILE = ".ports.env"
_HEADER = "# Written by Grove for this worktree: its own ports. Do not commit.\n"


def ports_text(values: dict[str, str]) -> str:
    return _HEADER + "".join(f"{key}={value}\n" for key, value in values.items())


def write_if_changed(path: Path, text: str, mode: int) -> bool:
    """Write atomically unless the file already holds exactly ``text`` with ``mode``; True if written."""
    try:
        if path.read_text(encoding="utf-8") == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except FileNotFoundError:
        pass
    locks.atomic_write_text(path, text, mode, durable=False)  # a worktree file: setup re-run rewrites it
    return True


def lay_over(text: str, values: dict[str, str], source: Path) -> str:
    """``text`` (a dotenv file) with ``values`` set: replaced in place, missing keys appended."""
    from dotenv.parser import parse_stream  # lazy: keeps `inv --list` lean

    out, seen = [], set()
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        if binding.error:
            line = binding.original.line
            raise bad_input(f"env file {source} line {line} is not KEY=VALUE", "fix that line; Grove will not guess")
        if binding.key in values:
            seen.add(binding.key)
            prefix = "export " if original.lstrip().startswith("export ") else ""
            newline = "\n" if original.endswith("\n") else ""
            original = f"{prefix}{binding.key}={values[binding.key]}{newline}"
        out.append(original)
    merged = "".join(out)
    missing = [key for key in values if key not in seen]
    if missing:
        if merged and not merged.endswith("\n"):
            merged += "\n"
        merged += "# Grove ports for this worktree\n" + "".join(f"{key}={values[key]}\n" for key in missing)
    return merged


def source_for(main_file: Path) -> tuple[Path | None, bool]:
    """The main checkout's file, else a sample beside it; (path, is_fallback)."""
    if main_file.is_file():
        return main_file, False
    for name in (f"{main_file.name}.sample", f"{main_file.name}.example", ".env.sample", ".env.example"):
        candidate = main_file.with_name(name)
        if candidate.is_file():
            return candidate, True
    return None, False


def merge_one(main_file: Path, target: Path, values: dict[str, str]) -> str:
    """Merge the ports into ``target``; returns a short description (no values) for the step line.

    A target that already exists keeps the agent's own edits: the ports are laid over it.
    """
    if target.is_file():
        text, origin = _read(target), "kept"
        source: Path | None = target
    else:
        source, fallback = source_for(main_file)
        if source is None and not target.parent.is_dir():
            return "skipped (directory missing)"
        text = _read(source) if source else ""
        origin = f"from {source.name}" if source and fallback else ("copied" if source else "ports only")
    merged = lay_over(text, values, source or target)
    changed = write_if_changed(target, merged, SECRET_MODE)
    return origin if changed else "unchanged"


def _read(path: Path) -> str:
    """The file's text; one that is not UTF-8 is named (an agent may save its .env as latin-1)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GroveError(f"env file {path} is not UTF-8 (byte {exc.start})",
                         hint="save it as UTF-8; Grove will not guess its encoding") from None


# -- the two resources: .ports.env, and each env file with the agent's values merged in ------------

def write_ports_env(agent: Agent) -> Outcome:
    settings = agent.settings
    # With a database URL (and its password) in it, the file is the agent's alone, like the env copies.
    mode = SECRET_MODE if settings.db_url and settings.db_url_var in agent.values else 0o644
    changed = write_if_changed(agent.path / PORTS_FILE, ports_text(agent.values), mode)
    return ("done" if changed else "unchanged"), PORTS_FILE, [PORTS_FILE]


def merge_env(agent: Agent) -> Outcome:
    notes, written = [], []
    for name in agent.settings.env_files:
        note = merge_one(agent.settings.repo / name, agent.path / name, agent.values)
        notes.append(f"{name}: {note}")
        if not note.startswith("skipped"):
            written.append(name)
    return "done", "; ".join(notes), written


PORTS_ENV = Resource("ports_env", write_ports_env, switch="files", writes_files=True, in_pool=True)
ENV = Resource("env", merge_env, switch="files", writes_files=True, in_pool=True)
