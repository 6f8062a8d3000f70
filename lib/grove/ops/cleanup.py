"""Teardown, bulk cleanup and gc: remove worktrees without ever losing a commit or an edit.

Every precondition is checked before the first change. Then, before anything is removed, what it
holds is saved (lib/grove/safety/preserve.py): uncommitted work as a salvage ref, a HEAD or branch tip
that nothing else reaches as a backup ref. A branch is deleted only when Grove's ownership journal
says Grove created it, never when it is the base or checked out in another worktree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..resources import agentdb, ports, table
from ..core import events, git, ids, locks, numbers, state
from ..safety import archive, owned, preserve
from . import adopt, pool, worktree
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.faults import fault
from ..core.report import Reporter

OP = "teardown"
# What bulk cleanups take (the seed's cleanup_epic_worktrees): `conflict` stays, it is where a
# conflict gets resolved; an explicit teardown of one agent still takes it (issue 10, defect 12).
BULK = ("completed", "merged", "failed")


def _base_ref(settings: Settings, s: dict | None) -> str:
    base = (s or {}).get("base_branch") or settings.base_branch
    return git.base_ref(settings.repo, settings.remote, base) or (s or {}).get("base_commit") or "HEAD"


def branch_merged(settings: Settings, s: dict) -> bool:
    """The branch's changes are in the base (by ancestry, patch-id or tree)."""
    return git.is_merged(settings.repo, f"refs/heads/{s['branch']}", _base_ref(settings, s))


def check_known(settings: Settings, adw_id: str, looked_up: tuple[dict | None, dict | None] | None = None) -> None:
    """Bad input (exit 2) unless Grove knows ``adw_id`` here: a state, a worktree or a port claim.
    ``looked_up``: (state, git's worktree entry) when the caller has read them already."""
    ids.check_id(adw_id)
    path = settings.worktree_path(adw_id)
    s, entry = looked_up or (state.load(settings, adw_id), git.worktree_for(settings.repo, path))
    claimed = any(lease["adw_id"] == adw_id for lease in ports.leases(settings))
    # A database gc or --keep-db kept is torn down (dumped, dropped) by naming its agent (issue 20, item 3).
    if s is None and entry is None and not path.exists() and not claimed and not agentdb.recorded(settings, adw_id):
        raise bad_input(f"no agent {adw_id!r} here: no state, worktree, port claim or database",
                        "see `inv list` and `inv git-worktrees`")


def teardown(settings: Settings, adw_id: str, *, delete_branch: bool = False, force: bool = False,
             salvage: bool | None = None, keep_db: bool = False, keep_db_why: str = "--keep-db",
             report: Reporter | None = None) -> dict:
    """Remove one agent's worktree, free its slot and archive its state; returns what was done.

    ``force`` passes a non-terminal status and an unmerged ``delete_branch`` (its tip is backed up).
    ``salvage`` (default: same as ``force``) lets a worktree with uncommitted work go, after that
    work is committed under refs/grove-salvage/; without it such a worktree is refused.
    The agent's Postgres databases (those the ownership journal gives it) are dumped into its archive
    and dropped unless ``keep_db`` (``keep_db_why`` is the note that says why they were kept).
    """
    salvage = force if salvage is None else salvage
    report = report or Reporter(quiet=True)
    ids.check_id(adw_id)
    with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is being set up or torn down right now"):
        s, path, entry, branch = _look_up(settings, adw_id)
        plan = _plan(settings, adw_id, s, entry, path, branch, delete_branch, force, salvage)
        # Each resource's plan, before anything changes: an unreachable database server is exit 1 here.
        options = {"keep_db": keep_db, "keep_db_why": keep_db_why}
        plans = {r.name: r.plan_release(settings, adw_id, options) for r in table.RELEASED if r.plan_release}
        result = {"adw_id": adw_id, "worktree_removed": None, "branch": branch, "branch_action": "kept",
                  "branch_note": plan["note"], "backup_ref": None, "salvage_ref": None, "worktree_backup_refs": [],
                  "submodule_refs": [], "moved_to": None, "moved_nested": [], "freed_slots": [], "databases": [],
                  "archive": archive.empty(), "state_archive": None, "stopped_processes": [], "worktree_kept": None}
        fault(OP, "before", "worktree")
        if adopt.kept_in_place(settings, s):
            # An adopted worktree outside trees/ is the user's: it stays, only Grove's hiding is undone (issue 22).
            assert s is not None
            adopt.release(settings, s, Path(s["worktree_path"]))
            result["worktree_kept"] = s["worktree_path"]
        elif entry is not None:
            saved = worktree.remove(settings, path, entry=entry, salvage=salvage, force=force)
            result.update(worktree_removed=str(path), **saved)
        elif path.exists() or os.path.islink(path):
            # Not a worktree: its files are in no commit and Grove cannot salvage them. Moved, never deleted.
            result["moved_to"] = str(worktree.quarantine(settings, adw_id, path))
        if not result["worktree_kept"] and not path.exists():
            pool.forget_take(settings, adw_id)  # a take a killed setup of it left half-done went with it
        fault(OP, "after", "worktree")
        if result["salvage_ref"]:
            events.emit(settings, "salvaged", adw_id, ref=result["salvage_ref"], worktree=str(path))
        if plan["delete"]:
            assert branch  # _plan() decides to delete only a branch that exists
            result["backup_ref"] = worktree.delete_branch(settings, branch, plan["base"])
            result["branch_action"] = "deleted"
        fault(OP, "after", "branch")
        for resource in table.RELEASED:  # the ports, the databases (dumped into the archive first)
            assert resource.release is not None
            result[resource.released_as] = resource.release(settings, adw_id, plans.get(resource.name))
            fault(OP, "after", resource.name)
        if s is not None:
            result["state_archive"] = str(state.archive_locked(settings, adw_id, _mark_cleaned))
        fault(OP, "after", "state")
        saved_refs = [r for r in (result["salvage_ref"], *result["worktree_backup_refs"], result["backup_ref"]) if r]
        saved_refs += result["submodule_refs"]
        events.emit(settings, "torn_down", adw_id, (s or {}).get("status"), "cleaned" if s is not None else None,
                    worktree_removed=result["worktree_removed"], worktree_kept=result["worktree_kept"],
                    moved_to=result["moved_to"], branch=branch, branch_action=result["branch_action"],
                    saved_refs=saved_refs or None, freed_slots=result["freed_slots"] or None, archive=result["archive"])
        stopped = result["stopped_processes"]
        dbs = "".join(f", database {d['name']} {d['action']}" for d in result["databases"])
        kept = result["archive"] or {}
        where = f"worktree kept at {result['worktree_kept']}" if result["worktree_kept"] else "worktree removed"
        report.say(f"✓ teardown {adw_id}: {where}, branch {branch or '-'} {result['branch_action']}{dbs}"
                   + (f" (saved: {', '.join(saved_refs)})" if saved_refs else "")
                   + (f"; kept {kept['files']} ignored file(s), {kept['bytes']} bytes, in {kept['path']}"
                      if kept.get("files") else "")
                   + ("; stopped " + ", ".join(f"{p['name']} ({p['pid']})" for p in stopped) if stopped else ""))
        return result


def _look_up(settings: Settings, adw_id: str) -> tuple[dict | None, Path, dict | None, str | None]:
    """The agent's state, worktree path, git's entry for it and its branch; refuses an unknown id.
    One lookup for a teardown and its --dry-run preview, so both refuse the same way."""
    s = state.load(settings, adw_id)
    path = settings.worktree_path(adw_id)
    entry = git.worktree_for(settings.repo, path)
    check_known(settings, adw_id, (s, entry))
    return s, path, entry, (s or {}).get("branch") or (entry or {}).get("branch")


def _plan(settings, adw_id, s, entry, path, branch, delete_branch, force, salvage) -> dict:
    """Refuse before changing anything: not Grove's, live status, uncommitted work, unmerged branch."""
    if s is None and entry is not None and not _owns_worktree(settings, adw_id, entry):
        raise GroveError(f"{path} is a worktree Grove has no record of creating (no state, branch not Grove's)",
                         hint=f"remove it with git yourself: git worktree remove {path}")
    if s is not None and s["status"] not in state.TERMINAL and s["status"] != "cleaned" and not force:
        raise bad_input(f"{adw_id} is {s['status']}, not finished",
                        f"mark it {'/'.join(state.TERMINAL)} first (`inv status --set`), or pass --force")
    # Before `git status` there: with its .git file gone, git would read the main checkout (issue 20,
    # item 13). With --force, worktree.remove() archives every file of such a directory instead.
    broken = entry is not None and path.is_dir() and preserve.checkout_problem(path, git.admin_dir(settings.repo, path))
    if broken and not force:
        preserve.require_checkout(path, git.admin_dir(settings.repo, path))
    if entry is not None and path.is_dir() and not salvage and not broken:
        dirty = git.dirty_files(path) + worktree.hidden_edits(settings, path)
        if dirty:
            shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
            raise GroveError(f"{path} has uncommitted changes: {shown}",
                             hint="commit them in the worktree, or pass --force: they are saved under "
                                  "refs/grove-salvage/ first")
    plan = {"delete": False, "note": None, "base": _base_ref(settings, s)}
    if not (delete_branch and branch and git.branch_exists(settings.repo, branch)):
        return plan
    refusal = _not_deletable(settings, adw_id, s, branch, path)
    if refusal:
        plan["note"] = refusal
        return plan
    if not branch_merged(settings, s or {"branch": branch}) and not force:
        raise GroveError(f"branch {branch} has commits that are not in {plan['base']}",
                         hint="merge it first (`inv merge`), keep it (drop --delete-branch), "
                              "or pass --force to delete it with its tip saved under refs/grove-backup/")
    plan["delete"] = True
    return plan


def _owns_worktree(settings: Settings, adw_id: str, entry: dict) -> bool:
    record = owned.owner(settings, "branch", entry["branch"]) if entry.get("branch") else None
    return bool(record and record.get("adw_id") == adw_id)


def _not_deletable(settings: Settings, adw_id: str, s: dict | None, branch: str, path: Path) -> str | None:
    """Why ``branch`` must stay, or None: not Grove's, the base, or in use by another worktree."""
    bases = {settings.base_branch, (s or {}).get("base_branch")}
    if branch in bases:
        return f"branch {branch} is the base branch: never deleted"
    record = owned.owner(settings, "branch", branch)
    if record is None or record.get("adw_id") != adw_id:
        return f"branch {branch} was not created by Grove for {adw_id}: kept"
    elsewhere = [w["path"] for w in git.worktrees(settings.repo)
                 if w["branch"] == branch and os.path.realpath(w["path"]) != os.path.realpath(path)]
    if elsewhere:
        return f"branch {branch} is checked out in {elsewhere[0]}: kept"
    return None


def _mark_cleaned(s: dict) -> None:
    if s["status"] != "cleaned":
        state.apply_status(s, "cleaned", by="grove teardown", error=s.get("error_message"))


def cleanup_epic(settings: Settings, epic_id: str, *, delete_branches: bool = False,
                 report: Reporter | None = None) -> dict:
    """Tear down every completed, merged or failed agent of ``epic_id``; unmerged branches are kept."""
    report = report or Reporter(quiet=True)
    cleaned, kept, errors = [], [], []
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s is None or s.get("epic_id") != epic_id:
            continue
        if s["status"] not in BULK:
            kept.append({"adw_id": adw_id, "reason": f"status {s['status']}"})
            continue
        has_branch = git.branch_exists(settings.repo, s["branch"])
        delete = delete_branches and has_branch and branch_merged(settings, s)
        try:
            cleaned.append(teardown(settings, adw_id, delete_branch=delete, report=report))
        except GroveError as exc:
            # A failed teardown is a failure, not a choice: listed in errors too, so the task exits 1 (issue 20, item 13).
            kept.append({"adw_id": adw_id, "reason": exc.message})
            errors.append(_error(report, adw_id, exc))
        if delete_branches and has_branch and not delete:
            report.say(f"kept branch {s['branch']}: it has unmerged commits")
    return {"epic_id": epic_id, "count": len(cleaned), "cleaned": cleaned, "kept": kept, "errors": errors}


def _error(report: Reporter, adw_id: str, exc: GroveError) -> dict:
    report.warn(f"{adw_id}: teardown failed: {exc}")
    return {"adw_id": adw_id, "error": exc.message, "hint": exc.hint or None, "exit_code": exc.code}


def last_activity(settings: Settings, s: dict) -> float:
    """The newest of: the state's updated_at, the branch's last commit, any file change in the worktree
    (an sqlite database in it included), the last write seen to its Postgres database.

    Age since creation alone is not activity (issue 3); writes to the database are (issue 20, item 3).
    """
    times = [state.parse_time(s.get("updated_at")) or 0.0]
    if git.branch_exists(settings.repo, s["branch"]):
        times.append(float(git.git(settings.repo, "log", "-1", "--format=%ct", f"refs/heads/{s['branch']}") or 0))
    path = Path(s.get("worktree_path") or settings.worktree_path(s["adw_id"]))  # an adopted one may be elsewhere
    if path.is_dir():
        times.append(_newest_mtime(path))
    times.append(agentdb.last_write(settings, s["adw_id"]))
    return max(times)


def _newest_mtime(root: Path) -> float:
    newest = root.stat().st_mtime
    skip = {".git", "node_modules", ".venv", "__pycache__"}  # installs, not the agent's own work
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in skip]
        for name in files:
            if name == ".git":
                continue  # git's link file in a worktree's root: not the agent's work
            try:
                newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
            except OSError:
                pass
    return newest


def gc(settings: Settings, max_age_days: float | str = 7, *, dry_run: bool = False,
       report: Reporter | None = None) -> dict:
    """Remove abandoned agents: non-terminal and idle for ``max_age_days``. Their branches and databases stay."""
    # -1 or nan made every agent "idle" and gc force-tore down one active seconds ago (issue 20, item 11).
    max_age_days = numbers.parse(max_age_days, "--max-age-days", numbers.DAYS)
    report = report or Reporter(quiet=True)
    cutoff = time.time() - max_age_days * 86400
    found, removed, kept = [], [], []
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s is None:  # torn down by another process since all_ids() listed it
            continue
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
            # The branch is never deleted here, so every commit on it stays reachable; uncommitted
            # work is salvaged under refs/grove-salvage/ before the worktree goes. The agent can be
            # resumed from its branch, so its database is kept too (issue 20, item 3): only an
            # explicit teardown of the agent drops it, after a dump.
            done = teardown(settings, adw_id, delete_branch=False, force=True, salvage=True, keep_db=True,
                            keep_db_why="gc: the agent can be resumed from its branch", report=report)
            removed.append(dict(entry, stopped_processes=done["stopped_processes"]))
        except GroveError as exc:
            kept.append(dict(entry, reason=exc.message))
    return {"max_age_days": max_age_days, "dry_run": dry_run, "abandoned": found, "removed": removed, "kept": kept}


def teardown_all(settings: Settings, *, keep_db: bool = False, report: Reporter | None = None) -> dict:
    """`make clean-worktrees`: tear down every completed, merged or failed agent.

    Uncommitted work is salvaged first; merged Grove branches are deleted, unmerged ones stay.
    Unfinished and `conflict` agents, and directories Grove did not create, are kept and listed.
    """
    report = report or Reporter(quiet=True)
    candidates = set(state.all_ids(settings))
    if settings.trees_path.is_dir():
        candidates.update(p.name for p in settings.trees_path.iterdir() if not p.name.startswith("."))
    torn, kept, errors = [], [], []
    for adw_id in sorted(candidates):
        try:
            s = state.load(settings, adw_id)
            if s is None:
                kept.append({"adw_id": adw_id, "reason": "no Grove state: not torn down (see `inv doctor`)"})
                continue
            if s["status"] not in BULK:
                kept.append({"adw_id": adw_id, "reason": f"status {s['status']}"})
                continue
            has_branch = git.branch_exists(settings.repo, s["branch"])
            merged = has_branch and branch_merged(settings, s)
            torn.append(teardown(settings, adw_id, delete_branch=merged, salvage=True, keep_db=keep_db, report=report))
            if has_branch and not merged:
                kept.append({"adw_id": adw_id, "reason": f"branch {s['branch']} has unmerged commits: kept"})
        except GroveError as exc:
            kept.append({"adw_id": adw_id, "reason": exc.message})
            errors.append(_error(report, adw_id, exc))
    return {"torn_down": torn, "kept": kept, "errors": errors}


def preview(settings: Settings, adw_id: str, *, delete_branch: bool = False, force: bool = False,
            keep_db: bool = False) -> dict:
    """What ``teardown`` would remove, save and keep, changing nothing: no lock is taken and no ref,
    file or database is touched (`--dry-run`, issue 21). The same refusals as a real run (exit 2/1)."""
    ids.check_id(adw_id)
    s, path, entry, branch = _look_up(settings, adw_id)
    plan = _plan(settings, adw_id, s, entry, path, branch, delete_branch, force, force)
    dirty = git.dirty_files(path) + worktree.hidden_edits(settings, path) if entry is not None and path.is_dir() else []
    return {
        "dry_run": True, "adw_id": adw_id,
        "worktree": str(path) if entry is not None or path.exists() else None,
        "worktree_action": "remove" if entry is not None else ("move aside" if path.exists() else None),
        "uncommitted": dirty,  # saved under refs/grove-salvage/<id>/ before the removal
        "branch": branch, "branch_action": "delete" if plan["delete"] else "keep", "branch_note": plan["note"],
        "slots": [lease["slot"] for lease in ports.leases(settings) if lease["adw_id"] == adw_id],
        "databases": agentdb.plan_teardown(settings, adw_id, keep_db),
        "archive": s is not None,
    }


def print_previews(d: dict) -> None:
    for p in d.get("agents", [d]):
        print_preview(p)


def print_preview(p: dict) -> None:
    where = f"{p['worktree_action']} {p['worktree']}" if p["worktree"] else "no worktree"
    print(f"would tear down {p['adw_id']}: {where}; branch {p['branch'] or '-'}: {p['branch_action']}"
          + (f" ({p['branch_note']})" if p["branch_note"] else ""))
    if p["uncommitted"]:
        print(f"  save first under refs/grove-salvage/{p['adw_id']}/: {', '.join(p['uncommitted'][:10])}")
    print(f"  free slots: {', '.join(map(str, p['slots'])) or 'none'}; archive the state: {'yes' if p['archive'] else 'no'}"
          + "".join(f"; database {d['name']}: {d['action']}" for d in p["databases"]))
    print("  nothing was changed (--dry-run)")
