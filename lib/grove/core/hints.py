"""How Grove names itself in what it prints (issue 21): the command the user ran, and the
install command that fits how Grove was installed.

The library's messages are written once, naming the command as `inv ...` or `grove ...`;
``speak`` turns either into the name this process was started as, so a user of `grove` is never
told to run an `inv` they may not have (a `uv tool` install brings no `inv`), and a user of
`inv setup` in their own repository is not told to run `grove`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# The name on the package index: `grove` there is an unrelated log collector (DESIGN.md pitfalls).
DIST = "grove-worktrees"

_program: str | None = None

# A command named at the start of a hint, after a backtick or quote, or after "run"/"or"/"e.g."
_NAMED = re.compile(r"(?<![\w./\0-])(?:inv|grove)(?= (?:-[-a-zA-Z]|[a-z][a-z.-]*\b))")
# Put before a name that means that very command (`inv setup` as what tasks.py enables): kept as is.
LITERAL = "\0"


def set_program(name: str) -> None:
    """The `grove` Program says who it is; without it the name comes from argv[0]."""
    global _program
    _program = name


def program() -> str:
    """`inv` when Invoke's own `inv`/`invoke` started this process, else `grove`."""
    if _program:
        return _program
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "inv" if called in ("inv", "invoke") else "grove"


def speak(text: str) -> str:
    """``text`` with each command it names (`inv setup`, `grove doctor`) said as this program's name."""
    if not text or ("inv" not in text and "grove" not in text):
        return text
    return _NAMED.sub(program(), text).replace(LITERAL, "")


def install_method() -> str:
    """How the running Grove was installed: ``uv-tool``, ``pipx``, ``checkout`` or ``pip``."""
    prefix = Path(sys.prefix)
    if (prefix / "uv-receipt.toml").is_file():  # `uv tool install` writes it in the tool's venv
        return "uv-tool"
    if (prefix / "pipx_metadata.json").is_file():  # pipx writes it in each app's venv
        return "pipx"
    if _in_checkout():
        return "checkout"
    return "pip"


def _in_checkout() -> bool:
    """Grove runs from a clone (editable install or `inv -r`): <clone>/lib/grove with its pyproject.
    (Not config.GROVE_DIR: errors imports this module, and config imports errors.)"""
    from importlib.resources import files

    package = Path(str(files("grove")))
    return (package.parents[1] / "pyproject.toml").is_file() and package.parent.name == "lib"


def install_extra(extra: str, packages: str) -> str:
    """The command that adds Grove's optional ``extra`` (which brings ``packages``) to this install."""
    method = install_method()
    if method == "uv-tool":
        return f"uv tool install '{DIST}[{extra}]' (or: uv tool install --with {packages} {DIST})"
    if method == "pipx":
        return f"pipx inject {DIST} {packages}"
    if method == "checkout":
        return f"{sys.executable} -m pip install {packages} (or `make venv` after adding it)"
    return f"{sys.executable} -m pip install '{DIST}[{extra}]'"


def install_tool(name: str) -> str:
    """Where a tool Grove runs for the user's projects (uv, bun, npm, pnpm, yarn) comes from."""
    hows = {
        "uv": "https://docs.astral.sh/uv/ (curl -LsSf https://astral.sh/uv/install.sh | sh)",
        "bun": "https://bun.sh (curl -fsSL https://bun.sh/install | bash), or npm: `npm install -g bun`",
        "npm": "install Node.js (it brings npm): https://nodejs.org",
        "pnpm": "`npm install -g pnpm` or `corepack enable`",
        "yarn": "`npm install -g yarn` or `corepack enable`",
    }
    how = hows.get(name, f"install {name}")
    if install_method() == "checkout" and name in ("uv", "bun"):
        how = f"`make tools` in Grove's checkout installs it, or {how}"
    return how
