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
from ..core.hints import speak


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


# What `grove init --tasks` writes: Invoke finds Grove's tasks, so `inv setup --adw-id X` works in
# the user's own repository (issue 21). Two lines, nothing to keep in sync with Grove.
TASKS_PY = ("# Grove's tasks for `inv setup --adw-id X` (pip install grove-worktrees): https://pypi.org/project/grove-worktrees/\n"
            "from grove.cli.tasks import ns  # noqa: F401\n")


def init_repo(settings: Settings, tasks: bool = False, save: bool = False) -> dict:
    """Make the repository ready for Grove without dirtying it, and say what Grove detected.

    Issue 21: the ignore rules go to .git/info/exclude (local to this clone: no tracked file
    changes behind the user's back, so a merge never meets an uncommitted .gitignore); no .env is
    written (a stub was committed by an agent's `git add -A` when not ignored, and shadowed
    .env.sample). Idempotent: a second run changes nothing."""
    from ..resources import deps

    if save:
        _require_ignored_env(settings)  # bad input changes nothing: checked before the first write
    did = [_exclude_grove_files(settings)]
    if tasks:
        did.append(_write_tasks_py(settings))
    projects: list[dict] = [{"dir": rel, "tools": tools} for rel, tools in
                (deps.detect(settings.repo, skip=(settings.trees_dir, settings.agents_dir))
                 if settings.detect_installs else [(d, deps.plan(settings.repo / d)) for d in settings.install_dirs])]
    tools = sorted({t for p in projects for t in p["tools"]})
    if save:
        did.append(_save_install_dirs(settings, [p["dir"] for p in projects]))
    did = [speak(line) for line in did]
    return {
        "repo": str(settings.repo),
        "did": did,
        "projects": projects,
        "projects_from": "detected" if settings.detect_installs else "ADW_INSTALL_DIRS",
        "env_files": [_env_source(settings, name) for name in settings.env_files],
        "tools": {t: deps.find_tool(t) for t in tools},
        "missing_tools": deps.missing_tools(settings, settings.repo),
        "inv": speak(_inv_usable(settings)),
    }


def _exclude_grove_files(settings: Settings) -> str:
    from ..core import git

    wanted = [f"/{settings.trees_dir}/", f"/{settings.agents_dir}/", envfiles.PORTS_FILE]
    missing = worktree_ignore_missing(settings)
    if not missing:
        return "ignore rules: trees, agents and .ports.env are already git-ignored"
    exclude = git.common_dir(settings.repo) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    new = [line for line in wanted if line not in present]
    head = "" if not text or text.endswith("\n") else "\n"
    marker = "" if "# Grove: agent worktrees, their state, per-worktree ports" in present else \
        "# Grove: agent worktrees, their state, per-worktree ports\n"
    locks.atomic_write_text(exclude, text + head + marker + "".join(f"{m}\n" for m in new))
    return (f"ignore rules: added {', '.join(new)} to {exclude} (this clone only; no tracked file "
            "changed, nothing to commit. Other clones run `grove init` too, or add them to .gitignore)")


def _save_install_dirs(settings: Settings, dirs: list[str]) -> str:
    """Write the detected projects down as ADW_INSTALL_DIRS in the repository's .env, so a later
    layout change does not change what setup installs; only into a .env git ignores (issue 21: an
    un-ignored .env rode into an agent's `git add -A`)."""
    env, line = settings.repo / ".env", f"ADW_INSTALL_DIRS={','.join(dirs)}"
    text = env.read_text() if env.exists() else ""
    from dotenv import dotenv_values

    if env.exists() and "ADW_INSTALL_DIRS" in dotenv_values(env, interpolate=False):
        text = envfiles.lay_over(text, {"ADW_INSTALL_DIRS": ",".join(dirs)}, env)
    else:
        head = "" if not text or text.endswith("\n") else "\n"
        text += f"{head}# Grove: the projects setup installs (written by `grove init --save`)\n{line}\n"
    locks.atomic_write_text(env, text, envfiles.SECRET_MODE)
    return f".env: {line} (git-ignored; setup now installs exactly these)"


def _require_ignored_env(settings: Settings) -> None:
    from ..core import git

    if not git.ok(settings.repo, "check-ignore", "-q", "--", ".env"):
        raise GroveError(f".env is not git-ignored in {settings.repo}: Grove writes no .env an agent could commit",
                         code=2, hint="add .env to .gitignore (and commit it), or set ADW_INSTALL_DIRS in the environment")


def worktree_ignore_missing(settings: Settings) -> list[str]:
    from . import worktree

    return worktree.ignore_warnings(settings)


def _write_tasks_py(settings: Settings) -> str:
    path = settings.repo / "tasks.py"
    if path.exists():
        if "grove.cli.tasks" in path.read_text(errors="replace"):
            return "tasks.py: already loads Grove's tasks"
        return ("tasks.py: yours exists, left as it is; to add Grove as a namespace: "
                "`from grove.cli.tasks import ns as grove` and `ns.add_collection(grove, name=\"grove\")` "
                "(then `\0inv grove.setup --adw-id X`)")
    locks.atomic_write_text(path, TASKS_PY)
    return ("tasks.py: written (2 lines: `\0inv setup --adw-id X` now runs Grove here); commit it "
            "so every clone has it, or add it to .git/info/exclude")


def _inv_usable(settings: Settings) -> str:
    """Whether `inv` can run Grove's tasks in this repository, and if not, how."""
    inv = Path(sys.executable).parent / "inv"
    tasks_py = settings.repo / "tasks.py"
    if not inv.is_file():
        return "no `inv` beside this Grove (a `uv tool` install brings only `grove`): use `grove`"
    if tasks_py.is_file() and "grove.cli.tasks" in tasks_py.read_text(errors="replace"):
        return "`\0inv setup --adw-id X` works here (tasks.py loads Grove)"
    return "`grove init --tasks` writes a two-line tasks.py so `\0inv setup --adw-id X` works here"


def _env_source(settings: Settings, name: str) -> dict:
    source, fallback = envfiles.source_for(settings.repo / name)
    where = None if source is None else str(source.relative_to(settings.repo))
    return {"file": name, "source": where, "template": fallback}


def print_init(report: dict) -> None:
    print(f"Grove in {report['repo']}")
    for line in report["did"]:
        print(f"  {line}")
    projects = ", ".join(f"{p['dir']} ({'+'.join(p['tools'])})" for p in report["projects"]) or "none"
    print(f"  projects to install ({report['projects_from']}): {projects}")
    for env in report["env_files"]:
        how = "absent: skipped" if env["source"] is None else \
            (f"from {env['source']} (template)" if env["template"] else "copied from the main checkout")
        print(f"  env file {env['file']}: {how}")
    for line in report["missing_tools"]:
        print(f"  missing tool: {line}")
    print(f"  inv: {report['inv']}")
    print(speak("  next: grove setup --adw-id a1   (then: grove run --adw-id a1 -- CMD, grove list, grove merge)"))


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
