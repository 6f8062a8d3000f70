"""What agents and newcomers touch directly: `inv run` with the agent's env, and `inv init`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..resources import envfiles
from ..core import locks, state
from ..core.config import DEFAULTS, GROVE_DIR, Settings
from ..core.errors import GroveError


def agent_env(worktree: Path) -> dict[str, str]:
    """The process env with the worktree's .env, then its .ports.env (ports win), laid over it."""
    from dotenv import dotenv_values

    env = dict(os.environ)
    for name in (".env", envfiles.PORTS_FILE):
        path = worktree / name
        if path.is_file():
            env.update({k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None})
    return env


def _grove_venvs() -> set[str]:
    """Grove's own virtualenv(s): the one running now, and the checkout's .venv."""
    venvs = set()
    if sys.prefix != sys.base_prefix:
        venvs.add(os.path.realpath(sys.prefix))
    if GROVE_DIR:
        venvs.add(os.path.realpath(GROVE_DIR / ".venv"))
    return venvs


def without_grove_venv(env: dict[str, str]) -> dict[str, str]:
    """``env`` minus Grove's venv: its bin/ off PATH and its VIRTUAL_ENV unset.

    DESIGN.md pitfall: with Grove's .venv/bin first on PATH, `uv run pytest` in an app ran Grove's
    pytest. The user's command must see the machine's tools and the project's own venv only.
    """
    venvs = _grove_venvs()
    bins = {os.path.join(v, "bin") for v in venvs}
    out = dict(env)
    if out.get("PATH"):
        out["PATH"] = os.pathsep.join(p for p in out["PATH"].split(os.pathsep)
                                      if p and os.path.realpath(p) not in bins)
    if out.get("VIRTUAL_ENV") and os.path.realpath(out["VIRTUAL_ENV"]) in venvs:
        del out["VIRTUAL_ENV"]
    return out


def command_env(s: dict) -> dict[str, str]:
    """What `inv run` and `inv exec` give a command: the agent's env files and ports, and who it is."""
    path = Path(s["worktree_path"])
    env = without_grove_venv(agent_env(path))
    env.update(ADW_ID=s["adw_id"], ADW_WORKTREE=str(path), ADW_BRANCH=s["branch"])
    return env


def resolve_program(argv0: str, worktree: Path, env: dict[str, str]) -> str | None:
    """``argv0`` as the command would find it: a path is relative to the worktree, a name is looked up on PATH."""
    if os.sep in argv0:
        program = os.path.join(worktree, argv0)
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(argv0, path=env.get("PATH", ""))


def exec_in(settings: Settings, adw_id: str, argv: list[str]) -> None:
    """Replace this process with ``argv`` (no shell) in the agent's worktree, with its env.

    exec, not a child: signals reach the command itself (stopping `inv run` stops the server),
    and the exit code is the command's own.
    """
    s = state.require(settings, adw_id)
    path = Path(s["worktree_path"])
    if not path.is_dir():
        raise GroveError(f"{adw_id} has no worktree at {path}", hint="run `inv doctor`, or set it up again")
    env = command_env(s)
    program = resolve_program(argv[0], path, env)
    if program is None:
        raise GroveError(f"{argv[0]}: command not found (cwd {path})", code=127)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(path)
    os.execve(program, argv, env)


def init_repo(settings: Settings) -> list[str]:
    """Add Grove's ignore lines and a commented config section; never duplicates a line."""
    said = []
    ignore = settings.repo / ".gitignore"
    wanted = [f"/{settings.trees_dir}/", f"/{settings.agents_dir}/", ".ports.env"]
    text = ignore.read_text() if ignore.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in wanted if line not in present]
    if missing:
        head = "" if not text or text.endswith("\n") else "\n"
        marker = "" if "# Grove" in present else "# Grove: agent worktrees, their state, and per-worktree ports\n"
        locks.atomic_write_text(ignore, text + head + marker + "".join(f"{m}\n" for m in missing))
        said.append(f".gitignore: added {', '.join(missing)}")
    else:
        said.append(".gitignore: already covers Grove")
    env = settings.repo / ".env"
    text = env.read_text() if env.exists() else ""
    if "# --- Grove" in text:
        said.append(".env: Grove section already present")
    else:
        section = "# --- Grove: uncomment to override a default (all keys: Grove's .env.example) ---\n"
        section += "".join(f"# {k}={v}\n" for k, v in DEFAULTS.items() if k != "ADW_REPO")
        head = "" if not text or text.endswith("\n") else "\n"
        locks.atomic_write_text(env, text + head + section, envfiles.SECRET_MODE)
        said.append(".env: added a commented Grove section")
    return said


def grove_command(portable: bool = True) -> str:
    """How a hook (Claude Code's, git's) calls this Grove, as shell text: `grove` when ``portable``
    and the `grove` on PATH is this one (fit for a committed file), else this Grove's `grove` by its
    absolute path, quoted (hooks run through a shell, maybe with another PATH)."""
    import shlex

    here = Path(sys.executable).parent / "grove"
    if not here.exists():
        return f"{shlex.quote(sys.executable)} -m grove"
    on_path = shutil.which("grove")
    if portable and on_path and os.path.realpath(on_path) == os.path.realpath(here):
        return "grove"
    return shlex.quote(str(here))
