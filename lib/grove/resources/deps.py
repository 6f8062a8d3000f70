"""Dependency installs: uv for Python projects, bun (or npm) for JS projects, auto-detected."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from ..core import proc
from ..core.config import GROVE_DIR
from ..core.errors import GroveError

HOW_TO_GET = {
    "uv": "`make tools` in Grove installs it into .venv, or `pip install uv`",
    "bun": "`make tools` in Grove installs it into .tools, or `npm install -g bun`",
    "npm": "install Node.js and npm",
}


def find_tool(name: str) -> str | None:
    """PATH first, then Grove's own .venv/bin and its local tools directory."""
    candidates: list[str | Path | None] = [shutil.which(name)]
    if GROVE_DIR:
        candidates += [GROVE_DIR / ".venv" / "bin" / name, GROVE_DIR / ".tools" / "node_modules" / ".bin" / name]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    return None


def require_tool(name: str, where: Path) -> str:
    tool = find_tool(name)
    if tool is None:
        raise GroveError(f"{name} is needed for {where} but was not found", hint=HOW_TO_GET[name])
    return tool


def plan(directory: Path) -> list[str]:
    """What to run in ``directory``: [] when it holds no project Grove knows."""
    commands = []
    if (directory / "pyproject.toml").is_file() and (directory / "uv.lock").is_file():
        commands.append("uv")
    if (directory / "package.json").is_file():
        use_npm = (directory / "package-lock.json").is_file() and find_tool("bun") is None
        commands.append("npm" if use_npm else "bun")
    return commands


def install_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # Grove's own venv is not the project's
    # Hardlink from uv's cache so each extra worktree costs almost no disk (issue 6).
    env.setdefault("UV_LINK_MODE", "hardlink")
    return env


# What uv reads to pick a project's interpreter, in the project's directory and each parent.
DISCOVERY_FILES = (".python-version", ".python-versions", "pyproject.toml", "uv.toml", "uv.lock")


class SharedInterpreter:
    """One interpreter discovery for many worktrees of the same commit set up in one call.

    uv discovers the interpreter at every `uv sync`; behind pyenv's shims that is most of a warm
    sync (~0.1 s of CPU of 0.13 s, measured). The first sync of a project runs as usual; every other
    one whose discovery inputs are byte-identical and which has no .venv yet is given
    ``--python`` = the interpreter the first one chose (its ``.venv/bin/python``): the same venv,
    without asking again (issue 12). Threads of one setup_many share one instance.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[tuple, tuple[threading.Event, list[str | None]]] = {}

    def sync(self, directory: Path, root: Path, run_sync) -> None:
        """Run ``run_sync(python)`` for ``directory`` (a project inside the worktree ``root``)."""
        key = discovery_key(directory, root) if not (directory / ".venv").exists() else None
        if key is None:
            run_sync(None)
            return
        with self._lock:
            leader = key not in self._found
            if leader:
                self._found[key] = (threading.Event(), [None])
            done, found = self._found[key]
        if not leader:
            done.wait()
            run_sync(found[0])
            return
        try:
            run_sync(None)
            found[0] = _venv_interpreter(directory / ".venv")
        finally:
            done.set()


def discovery_key(directory: Path, root: Path) -> tuple | None:
    """The bytes of every file uv's interpreter discovery reads, from ``directory`` up to ``root``;
    None when ``directory`` is not inside ``root``."""
    try:
        rel = directory.relative_to(root)
    except ValueError:
        return None
    parts: list = [str(rel)]
    for level in [directory, *directory.parents]:
        for name in DISCOVERY_FILES:
            try:
                parts.append((str(level.relative_to(root)), name, (level / name).read_bytes()))
            except FileNotFoundError:
                pass
        if level == root:
            return tuple(parts)
    return None


def _venv_interpreter(venv: Path) -> str | None:
    """The base interpreter a venv was made with: what its bin/python links to (uv links it)."""
    try:
        target = os.readlink(venv / "bin" / "python")
    except OSError:
        return None
    return target if os.path.isabs(target) and os.access(target, os.X_OK) else None


def install(directory: Path, timeout: float, shared: SharedInterpreter | None = None,
            root: Path | None = None) -> list[str]:
    """Install what ``directory`` declares; returns the tools run.

    ``shared`` (with ``root``, the worktree): one interpreter discovery for the uv projects of many
    worktrees set up together.
    """
    def run(argv: list[str], kind: str) -> None:
        proc.run(argv, cwd=directory, env=install_env(), timeout=timeout, what=f"{kind} install in {directory}")

    ran = []
    for kind in plan(directory):
        if kind == "uv":
            uv = require_tool("uv", directory)

            def sync(python: str | None = None) -> None:
                run([uv, "sync", "--all-extras", *(["--python", python] if python else [])], "uv")

            if shared is not None and root is not None:
                shared.sync(directory, root, sync)
            else:
                sync()
        elif kind == "bun":
            run([require_tool("bun", directory), "install"], kind)
        else:
            run([require_tool("npm", directory), "ci", "--no-audit", "--no-fund"], kind)
        ran.append(kind)
    return ran
