"""Teardown, bulk cleanup and gc: remove worktrees without ever making a commit unreachable.

Every precondition is checked before the first change. A branch that is not merged is kept,
or, when the user insists, its tip is saved under refs/grove-backup/<branch> first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import git, ids, locks, ports, state, worktree
from .config import Settings
from .errors import GroveError, bad_input
from .faults import fault
from .report import Reporter

OP = "teardown"


def _base_ref(settings: Settings, s: dict | None) -> str:
    base = (s or {}).get("base_branch") or settings.base_branch
    for ref in (f"refs/heads/{base}", f"refs/remotes/{settings.remote}/{base}"):
        if git.rev(settings.repo, ref):
            return ref
    return (s or {}).get("base_commit") or "HEAD"


def branch_merged(settings: Settings, s: dict) -> bool:
    return git.is_merged(settings.repo, f"refs/heads/{s['branch']}", _base_ref(settings, s))


def teardown(settings: Settings, adw_id: str, *, delete_branch: bool = False, force: bool = False,
             discard: bool | None = None, report: Reporter | None = None) -> dict:
    """Remove one agent's worktree, free its slot and archive its state; returns what was done.

    ``force`` passes a non-terminal status and an unmerged ``delete_branch`` (tip backed up);
    ``discard`` (default: same as ``force``) lets uncommitted changes go with the worktree.
    """
    discard = force if discard is None else discard
    report = report or Reporter(quiet=True)
    ids.check_id(adw_id)
    with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is being set up or torn down right now"):
        s = state.load(settings, adw_id)
        path = settings.worktree_path(adw_id)
        entry = git.worktree_for(settings.repo, path)
        claimed = any(c.get("adw_id") == adw_id for c in ports.read_registry(settings).values())
        if s is None and entry is None and not path.exists() and not claimed:
            raise bad_input(f"no agent {adw_id!r} here: no state, worktree or port claim",
                            "see `inv list` and `inv git-worktrees`")
        branch = (s or {}).get("branch") or (entry or {}).get("branch")
        plan = _plan(settings, adw_id, s, entry, path, branch, delete_branch, force, discard)
        fault(OP, "before", "worktree")
        if entry is not None or path.exists():
            worktree.remove(settings, path, force=discard, entry=entry)
        fault(OP, "after", "worktree")
        result = {"adw_id": adw_id, "worktree_removed": str(path), "branch": branch, "branch_action": "kept",
                  "backup_ref": None, "freed_slots": [], "archive": None}
        if plan["delete"]:
            with worktree.repo_lock(settings):
                if plan["backup"]:
                    result["backup_ref"] = git.save_backup(settings.repo, branch)
                git.git(settings.repo, "branch", "-D", "--", branch)
            result["branch_action"] = "deleted"
        fault(OP, "after", "branch")
        result["freed_slots"] = ports.release(settings, adw_id)
        fault(OP, "after", "ports")
        if s is not None:
            result["archive"] = str(state.archive_locked(settings, adw_id, _mark_cleaned))
        fault(OP, "after", "state")
        report.say(f"✓ teardown {adw_id}: worktree removed, branch {branch or '-'} {result['branch_action']}"
                   + (f" (tip saved as {result['backup_ref']})" if result["backup_ref"] else ""))
        return result


def _plan(settings, adw_id, s, entry, path, branch, delete_branch, force, discard) -> dict:
    """Refuse before changing anything: live status, uncommitted work, unmerged branch."""
    if s is not None and s["status"] not in state.TERMINAL and s["status"] != "cleaned" and not force:
        raise bad_input(f"{adw_id} is {s['status']}, not finished",
                        f"mark it {'/'.join(state.TERMINAL)} first (`inv status --set`), or pass --force")
    if entry is not None and path.is_dir() and not discard:
        dirty = git.dirty_files(path)
        if dirty:
            shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
            raise GroveError(f"{path} has uncommitted changes: {shown}",
                             hint="commit them in the worktree, or pass --force to discard them")
    if entry is None and path.exists() and not discard:
        raise GroveError(f"{path} exists but git does not know it as a worktree; its files are not in any commit",
                         hint="move what you need out of it, then pass --force to delete it")
    plan = {"delete": False, "backup": False}
    if delete_branch and branch and git.branch_exists(settings.repo, branch):
        merged = branch_merged(settings, s or {"branch": branch})
        if not merged and not force:
            raise GroveError(f"branch {branch} has commits that are not in {_base_ref(settings, s)}",
                             hint="merge it first (`inv merge`), keep it (drop --delete-branch), "
                                  "or pass --force to delete it with its tip saved under refs/grove-backup/")
        plan = {"delete": True, "backup": not merged}
    return plan


def _mark_cleaned(s: dict) -> None:
    if s["status"] != "cleaned":
        state.apply_status(s, "cleaned", by="grove teardown", error=s.get("error_message"))


def cleanup_epic(settings: Settings, epic_id: str, *, delete_branches: bool = False,
                 report: Reporter | None = None) -> dict:
    """Tear down every finished agent of ``epic_id``; unmerged branches are kept, not deleted."""
    report = report or Reporter(quiet=True)
    cleaned, kept = [], []
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s.get("epic_id") != epic_id:
            continue
        if s["status"] not in state.TERMINAL:
            kept.append({"adw_id": adw_id, "reason": f"status {s['status']}"})
            continue
        has_branch = git.branch_exists(settings.repo, s["branch"])
        delete = delete_branches and has_branch and branch_merged(settings, s)
        try:
            cleaned.append(teardown(settings, adw_id, delete_branch=delete, report=report))
        except GroveError as exc:
            kept.append({"adw_id": adw_id, "reason": exc.message})
        if delete_branches and has_branch and not delete:
            report.say(f"kept branch {s['branch']}: it has unmerged commits")
    return {"epic_id": epic_id, "count": len(cleaned), "cleaned": cleaned, "kept": kept}


def last_activity(settings: Settings, s: dict) -> float:
    """The newest of: the state's updated_at, the branch's last commit, any file change in the worktree.

    Age since creation alone is not activity (issue 3).
    """
    times = [state.parse_time(s.get("updated_at")) or 0.0]
    if git.branch_exists(settings.repo, s["branch"]):
        times.append(float(git.git(settings.repo, "log", "-1", "--format=%ct", f"refs/heads/{s['branch']}") or 0))
    path = settings.worktree_path(s["adw_id"])
    if path.is_dir():
        times.append(_newest_mtime(path))
    return max(times)


def _newest_mtime(root: Path) -> float:
    newest = root.stat().st_mtime
    skip = {".git", "node_modules", ".venv", "__pycache__"}  # installs, not the agent's own work
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in skip]
        for name in files:
            try:
                newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
            except OSError:
                pass
    return newest


def gc(settings: Settings, max_age_days: float = 7, *, dry_run: bool = False, report: Reporter | None = None) -> dict:
    """Remove abandoned agents: non-terminal and idle for ``max_age_days``. Their branches stay."""
    report = report or Reporter(quiet=True)
    cutoff = time.time() - max_age_days * 86400
    found, removed, kept = [], [], []
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s["status"] in state.TERMINAL or s["status"] == "cleaned":
            continue
        idle = last_activity(settings, s)
        if idle >= cutoff:
            continue
        entry = {"adw_id": adw_id, "status": s["status"], "branch": s["branch"],
                 "idle_days": round((time.time() - idle) / 86400, 1)}
        found.append(entry)
        if dry_run:
            continue
        try:
            # The branch is never deleted here, so every commit on it stays reachable; a worktree
            # with uncommitted changes is kept and reported rather than discarded.
            teardown(settings, adw_id, delete_branch=False, force=True, discard=False, report=report)
            removed.append(entry)
        except GroveError as exc:
            kept.append(dict(entry, reason=exc.message))
    return {"max_age_days": max_age_days, "dry_run": dry_run, "abandoned": found, "removed": removed, "kept": kept}


def teardown_all(settings: Settings, *, report: Reporter | None = None) -> dict:
    """`make clean-worktrees`: tear down every agent, keeping dirty worktrees and unmerged branches.

    Merged branches are deleted; an unmerged branch stays (so no commit is lost) and is listed.
    """
    report = report or Reporter(quiet=True)
    candidates = set(state.all_ids(settings))
    if settings.trees_path.is_dir():
        candidates.update(p.name for p in settings.trees_path.iterdir() if not p.name.startswith("."))
    torn, kept = [], []
    for adw_id in sorted(candidates):
        try:
            s = state.load(settings, adw_id)
            has_branch = bool(s) and git.branch_exists(settings.repo, s["branch"])
            merged = has_branch and branch_merged(settings, s)
            torn.append(teardown(settings, adw_id, delete_branch=merged, force=True, discard=False, report=report))
            if has_branch and not merged:
                kept.append({"adw_id": adw_id, "reason": f"branch {s['branch']} has unmerged commits: kept"})
        except GroveError as exc:
            kept.append({"adw_id": adw_id, "reason": exc.message})
    return {"torn_down": torn, "kept": kept}
