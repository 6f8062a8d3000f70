"""Dependency installs: uv for Python projects, bun (or npm) for JS projects, auto-detected."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import proc
from .config import GROVE_DIR
from .errors import GroveError

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


def install(directory: Path, timeout: float) -> list[str]:
    """Install what ``directory`` declares; returns the tools run."""
    ran = []
    for kind in plan(directory):
        if kind == "uv":
            argv = [require_tool("uv", directory), "sync", "--all-extras"]
        elif kind == "bun":
            argv = [require_tool("bun", directory), "install"]
        else:
            argv = [require_tool("npm", directory), "ci", "--no-audit", "--no-fund"]
        proc.run(argv, cwd=directory, env=install_env(), timeout=timeout, what=f"{kind} install in {directory}")
        ran.append(kind)
    return ran
