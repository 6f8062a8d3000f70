"""The merge queue's integration worktree (trees/.grove-merge), prepared like an agent's (issue 13).

Merges happen here, detached, never in the user's checkout. When a validate command is given the
tree goes through the agent's setup chain before each validation: its own port slot, .ports.env,
the env files, the repointed configs, installed dependencies and a fresh database. The command then
runs with those ports and env exported, as `inv run` does, with Grove's own venv off PATH.

Tracked files the chain rewrites (repointed configs, a tracked .env) are rewritten only for the
validation and reset right after, so no merge ever sees them: skip-worktree, which hides them in an
agent's worktree, would make the next `git merge` refuse here (DESIGN.md pitfalls). Untracked
generated files and the installed dependencies stay between runs; a dependency directory is
re-installed only when one of its lock files changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import agentrun, steps, worktree
from ..resources import db, deps, ports
from ..core import git, locks, proc
from ..core.config import Settings
from ..core.errors import GroveError

NAME = ".grove-merge"
# The port registry's id for the integration worktree. No agent id may start with '.', so it
# never collides with an agent; `ports.stale_reason` keeps it live while trees/.grove-merge exists.
CLAIM_ID = NAME
LOCK_FILES = ("uv.lock", "pyproject.toml", "package.json", "bun.lock", "bun.lockb", "package-lock.json")
# What `git clean` must keep between runs even when the repo does not ignore it: installs.
KEEP = (".venv/", "node_modules/")
# This worktree never sets its submodules up: a user's submodule.recurse=true would make checkout
# and reset recurse into them, and git fails ("not a git repository: .../modules/<path>").
NO_RECURSE = ("-c", "submodule.recurse=false")


def run_git(wt: Path, *args: str) -> str:
    """``git -C wt args`` with NO_RECURSE; stdout without its final newline."""
    return proc.run(["git", *NO_RECURSE, "-C", wt, *args], what=f"git {args[0]}").stdout.rstrip("\n")


def path(settings: Settings) -> Path:
    return settings.trees_path / NAME


def reset(settings: Settings, tip: str) -> Path:
    """The integration worktree, detached at ``tip`` and clean (whatever a crash left in it)."""
    wt = path(settings)
    entry = git.worktree_for(settings.repo, wt)
    if entry is not None and worktree.is_stillborn(entry) and worktree.repair_stillborn(settings, wt):
        entry = None  # a merge killed inside `git worktree add`: start again
    if entry is None:
        if wt.exists() or wt.is_symlink():  # not a worktree: files Grove cannot save in git, moved aside
            worktree.quarantine(settings, NAME, wt)
        settings.trees_path.mkdir(parents=True, exist_ok=True)
        with worktree.repo_lock(settings):
            git.prune_entry(settings.repo, wt)
            # --no-checkout, as for agents: a kill inside `worktree add` then leaves only `.git`,
            # which doctor --fix and the next run can prove empty and remove (issue 10, defect 11).
            git.git(settings.repo, "worktree", "add", "--quiet", "--detach", "--no-checkout", wt, tip)
        worktree.checkout_new(settings, wt)  # a private index: a kill midway leaves no index.lock
        return wt
    # A git command killed with `inv merge` (kill -9, a cancelled CI job) leaves index.lock, and then
    # every later checkout here fails. Under the merge lock no Grove process uses this worktree, and
    # what it holds is thrown away below anyway, so a lock found now is stale.
    (git.own_admin_dir(wt) / "index.lock").unlink(missing_ok=True)
    for abort in (("merge", "--abort"), ("rebase", "--abort")):
        proc.run(["git", *NO_RECURSE, "-C", wt, *abort], check=False)
    goto(wt, tip)
    return wt


def goto(wt: Path, tip: str) -> None:
    """Detached HEAD, index and files at ``tip``; untracked files go, ignored ones and installs stay."""
    run_git(wt, "checkout", "--quiet", "--detach", "--force", tip)
    clean(wt)


def clean(wt: Path) -> None:
    excludes = [arg for keep in KEEP for arg in ("-e", keep)]
    run_git(wt, "reset", "--hard", "--quiet")
    git.git(wt, "clean", "-ffdq", *excludes)


class Prepared:
    """The integration worktree's slot and ports for one merge run; release() when the run ends."""

    def __init__(self, settings: Settings, wt: Path):
        self.settings, self.wt = settings, wt
        claim = ports.claim(settings, CLAIM_ID)
        self.ports = dict(claim.ports)
        self.values = steps.env_values(settings, wt.name, claim.ports)  # ports, Compose name, database URL
        # Fresh env copies each run (an agent keeps its own edits; this tree has none to keep).
        for name in settings.env_files:
            if (wt / name).is_file() and not _tracked(wt, name):
                (wt / name).unlink()

    def before_validation(self) -> list[str]:
        """Run the chain's file steps, install what changed, reset the database; returns notes."""
        notes, untracked = [], []
        outcomes, written = steps.write_files(self.settings, self.wt.name, self.wt, self.values)
        untracked += [f for f in written if not _tracked(self.wt, f)]
        notes += [f"{name}: {outcome}" for name, outcome in outcomes.items()]
        # Untracked generated files go into info/exclude so `git clean` keeps them; tracked ones
        # are rewritten in place and undone by clean() after the validation.
        worktree.hide(self.settings, self.wt, untracked)
        notes.append(f"install: {self._install()}")
        outcome, detail = db.reset_db(self.settings, self.wt, self.values)
        notes.append(f"db: {outcome}")
        return notes

    def _install(self) -> str:
        stamps = _read_stamps(self.settings)
        ran = []
        for name in deps.install_dirs(self.settings, self.wt):
            directory = self.wt / name
            kinds = deps.plan(directory) if directory.is_dir() else []
            if not kinds:
                continue
            digest = _lock_digest(directory, kinds)
            if stamps.get(name) == digest:
                continue
            deps.install(directory, self.settings.install_timeout)
            stamps[name] = _lock_digest(directory, kinds)  # after: the install's output now exists
            _write_stamps(self.settings, stamps)
            ran.append(name)
        return f"installed {', '.join(ran)}" if ran else "reused"

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        """The command's whole environment: like `inv run`, with Grove's own venv left out."""
        env = without_grove_venv(agentrun.agent_env(self.wt), self.settings.grove_path / "tools")
        env.update(extra, ADW_WORKTREE=str(self.wt))
        return env

    def release(self) -> None:
        ports.release(self.settings, CLAIM_ID)


def _tracked(wt: Path, name: str) -> bool:
    return bool(git.git(wt, "ls-files", "--", name))


def _lock_digest(directory: Path, kinds: list[str]) -> str:
    """A digest of the lock files, and of whether the install's output is still there."""
    digest = hashlib.sha256("+".join(kinds).encode())
    for name in LOCK_FILES:
        file = directory / name
        digest.update(f"\0{name}\0".encode() + (file.read_bytes() if file.is_file() else b"-"))
    for marker in (".venv", "node_modules"):
        digest.update(f"\0{marker}:{(directory / marker).is_dir()}".encode())
    return digest.hexdigest()


def _stamps_path(settings: Settings) -> Path:
    return settings.grove_path / "merge-deps.json"


def _read_stamps(settings: Settings) -> dict:
    try:
        data = locks.read_json(_stamps_path(settings), "install stamps")
    except GroveError:
        data = None  # a corrupt stamp file only costs a re-install
    return data if isinstance(data, dict) else {}


def _write_stamps(settings: Settings, stamps: dict) -> None:
    locks.atomic_write_text(_stamps_path(settings), json.dumps(stamps, indent=2) + "\n")


# -- Grove's own environment must not leak into the user's command (DESIGN.md pitfalls) ---------


def without_grove_venv(env: dict[str, str], tools_home: Path) -> dict[str, str]:
    """``env`` minus Grove's venv (agentrun.without_grove_venv), plus uv and bun.

    uv and bun may live only in Grove's .venv and .tools (`make tools`): a directory holding links
    to just those two (in ``tools_home``) goes at the end of PATH, so the app's own venv and the
    machine's tools win.
    """
    out = agentrun.without_grove_venv(env)
    parts = [p for p in out.get("PATH", "").split(os.pathsep) if p]
    tools = _tools_dir(parts, tools_home)
    if tools:
        parts.append(tools)
    out["PATH"] = os.pathsep.join(parts)
    return out


def _tools_dir(path_parts: list[str], directory: Path) -> str | None:
    import shutil

    wanted = {}
    for name in ("uv", "bun"):
        if shutil.which(name, path=os.pathsep.join(path_parts)) is None:
            found = deps.find_tool(name)
            if found:
                wanted[name] = found
    if not wanted:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    for name, target in wanted.items():
        link = directory / name
        if not link.is_symlink() or os.readlink(link) != target:
            tmp = directory / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
    return str(directory)
