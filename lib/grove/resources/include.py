"""`.worktreeinclude`: ignored files of the main checkout to copy into each new worktree.

The file (as Claude Code and worktrunk use it) holds gitignore patterns. The list is git's own
`ls-files --others --ignored --exclude-standard` intersected with those patterns, so git does the
matching. Copies are reflinks where the filesystem can, plain copies elsewhere; symlinks stay
symlinks and exec bits stay (`cp -a --reflink=auto`, or Python's copy where GNU cp is missing).
Env files are left to the env step.
"""

from __future__ import annotations

from pathlib import Path

from ..core import files, git, portable
from ..core.config import Settings
from .shape import Agent, Outcome, Resource

INCLUDE_FILE = ".worktreeinclude"


def listed(settings: Settings) -> list[str]:
    """Ignored files of the main checkout that ``.worktreeinclude`` names, minus Grove's own dirs."""
    patterns = settings.repo / INCLUDE_FILE
    if not patterns.is_file():
        return []
    ignored = set(git.git(settings.repo, "ls-files", "-z", "--others", "--ignored", "--exclude-standard").split("\0"))
    wanted = git.git(settings.repo, "ls-files", "-z", "--others", "--ignored", f"--exclude-from={patterns}").split("\0")
    skip = (f"{settings.trees_dir}/", f"{settings.agents_dir}/")
    return sorted(p for p in wanted if p and p in ignored and not p.startswith(skip) and p not in settings.env_files)


def copy_into(settings: Settings, worktree: Path) -> tuple[str, str, list[str]]:
    wanted = listed(settings)
    if not wanted:
        return "skipped", f"no {INCLUDE_FILE}" if not (settings.repo / INCLUDE_FILE).is_file() else "nothing listed", []
    missing = [f for f in wanted if not (worktree / f).exists() and not (worktree / f).is_symlink()]
    if missing:  # GNU cp (reflinks) where it exists, else Python's own copy: lib/grove/core/files.py
        files.clone_files(settings.repo, worktree, missing, portable.copy_backend(settings.copy_backend))
    return ("done" if missing else "unchanged"), f"{len(wanted)} file(s) from {INCLUDE_FILE}", []


def prepare(agent: Agent) -> Outcome:
    return copy_into(agent.settings, agent.path)


RESOURCE = Resource("include", prepare, switch="files", writes_files=True, in_pool=True)
