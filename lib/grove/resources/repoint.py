"""Repoint relative and main-checkout paths in JSON config files (e.g. MCP configs) at the worktree.

The rewrite walks the parsed JSON, so only string values change and the file stays valid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..core.errors import bad_input
from .shape import Agent, Outcome, Resource


def _repoint(value: str, main: Path, trees: Path, worktree: Path) -> str:
    if value.startswith("./"):
        return str(worktree / value[2:])
    if value.startswith("/"):
        path = Path(value)
        # Paths into the main checkout move to the worktree; paths already under trees/ stay.
        if path.is_relative_to(main) and not path.is_relative_to(trees):
            return str(worktree / path.relative_to(main))
    return value


def _walk(node, key: str, fix, dirs: list[Path]):
    if isinstance(node, dict):
        return {k: _walk(v, k, fix, dirs) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, key, fix, dirs) for v in node]
    if isinstance(node, str):
        new = fix(node)
        # A path under a *dir* key (outputDir, videoDir ...) or ending in '/' names a directory to create.
        if new != node and ("dir" in key.lower() or node.endswith("/")):
            dirs.append(Path(new))
        return new
    return node


def _strings(node: object) -> Iterator[str]:
    """Every string value in parsed JSON."""
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def repoint_data(data, main: Path, trees: Path, worktree: Path) -> tuple[object, list[Path]]:
    """Parsed JSON with its paths repointed, and the directories it names; nothing is written."""
    dirs: list[Path] = []
    return _walk(data, "", lambda v: _repoint(v, main, trees, worktree), dirs), dirs


# What older Grove versions wrote into a directory they created for a repointed path: it hid
# everything an agent wrote there from git (issue 20, item 1). Recognised by its exact text only.
OLD_DIR_IGNORE = "# made by Grove for this worktree\n*\n"


def _drop_old_dir_ignore(directory: Path) -> None:
    """A re-run removes that `.gitignore` (exactly Grove's text, never anyone else's file)."""
    marker = directory / ".gitignore"
    try:
        if not marker.is_symlink() and marker.read_text(encoding="utf-8") == OLD_DIR_IGNORE:
            marker.unlink()
    except (OSError, UnicodeDecodeError):
        pass


def as_written(text: str, data: object, new: object) -> str:
    """The repointed config ``new`` as the repoint step writes it: ``text`` itself when nothing
    changed, else JSON in the original's layout (indented when it spanned lines). The archive and
    hidden-edit checks compare with this text, so there is one rule for it."""
    if new == data:
        return text
    return json.dumps(new, indent=2 if "\n" in text.strip() else None) + "\n"


def repoint_file(path: Path, main: Path, trees: Path, worktree: Path) -> tuple[bool, list[Path]]:
    """Rewrite one file in place; returns (changed, directories created)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise bad_input(f"config file {path} is not valid JSON ({exc})") from None
    new, dirs = repoint_data(data, main, trees, worktree)
    created = []
    for directory in dirs:
        if directory.is_relative_to(worktree) and not directory.exists():
            directory.mkdir(parents=True, exist_ok=True)
            created.append(directory)

    # A re-run finds the file repointed already (its paths unchanged now): look at every path in it.
    for value in _strings(new):
        if value.startswith(str(worktree) + "/") and Path(value).is_dir():
            _drop_old_dir_ignore(Path(value))
    if new == data:
        return False, created
    path.write_text(as_written(text, data, new), encoding="utf-8")
    return True, created


def prepare(agent: Agent) -> Outcome:
    """Setup's repoint step: each of ADW_PATH_CONFIGS the worktree has, rewritten to point at it."""
    settings, path = agent.settings, agent.path
    notes, written = [], []
    for name in settings.path_configs:
        if not (path / name).is_file():
            notes.append(f"{name}: absent")
            continue
        changed, made = repoint_file(path / name, settings.repo, settings.trees_path, path)
        notes.append(f"{name}: {'rewritten' if changed else 'unchanged'}")
        written.append(name)
        written.extend(str(d.relative_to(path)) for d in made)
    return "done", "; ".join(notes), written


# Not in the pool: the rewritten paths name the worktree's final place, known only at take.
RESOURCE = Resource("repoint", prepare, switch="files", writes_files=True)
