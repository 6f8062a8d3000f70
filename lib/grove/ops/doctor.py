"""`inv doctor`: the seed's three-way validation (state, directory, git) for every agent, plus the
port registry and branches a crash left behind. ``fix`` repairs what is safe and nothing else:
no unmerged commit and no file that is in no commit is ever deleted.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..resources import ports, table
from ..resources.shape import Found, problem as _problem
from ..core import git, locks, state
from ..safety import checkout as ffwd, owned, preserve
from . import worktree
from ..core.config import Settings
from ..core.errors import GroveError
from ..core.hints import speak



def check(settings: Settings, fix: bool = False) -> dict:
    # A worktree add killed midway breaks `git rev-list --all` for everyone: repaired first, so the
    # rest of the checks see the repository as git will after the fix.
    problems: list[dict] = _stillborn(settings, fix) + _interrupted_fast_forwards(settings, fix)
    entries = {os.path.realpath(w["path"]): w for w in git.worktrees(settings.repo)}
    trees = os.path.realpath(settings.trees_path)
    agents, seen_paths = {}, set()
    for adw_id in _state_dirs(settings):
        try:
            agents[adw_id] = state.load(settings, adw_id)
        except GroveError as exc:
            problems.append(_problem("corrupt_state", exc.message, None, adw_id=adw_id,
                                     path=str(settings.state_path(adw_id))))
    for adw_id, s in agents.items():
        if s is None:
            continue
        real = os.path.realpath(s["worktree_path"])
        seen_paths.add(real)
        problems += _check_agent(settings, adw_id, s, real in entries, os.path.isdir(real))
    for real, w in entries.items():
        # Hidden entries (trees/.grove-merge, the pool's trees/.pool/*) are Grove's own, checked elsewhere.
        if real.startswith(trees + os.sep) and real not in seen_paths \
                and not Path(os.path.relpath(real, trees)).parts[0].startswith("."):
            if not os.path.isdir(real):
                problems.append(_problem("stale_git_entry", f"git lists {w['path']} but the directory is gone",
                                         "prune this entry", path=w["path"]))
            else:
                problems.append(_problem("worktree_without_state", f"{w['path']} is a worktree with no Grove state",
                                         None, path=w["path"], branch=w["branch"]))
    if os.path.isdir(trees):
        for child in sorted(Path(trees).iterdir()):
            real = os.path.realpath(child)
            if not child.name.startswith(".") and real not in entries and real not in seen_paths:
                if child.is_symlink():  # pointing who knows where: Grove moves nothing it cannot prove is its own
                    problems.append(_problem("unknown_directory", f"{child} is a symlink Grove did not make", None,
                                             path=str(child), hint=f"look at it and remove it yourself: rm {child}"))
                    continue
                problems.append(_problem("unknown_directory", f"{child} is not a worktree git knows and has no state",
                                         "move it to agents/.archive/ (nothing is deleted)", path=str(child)))
    problems += _interrupted_syncs(settings, agents, fix)
    found = Found(live=_live_ids(settings), busy=lambda adw_id: _busy(settings, adw_id))
    for resource in table.CHECKED:  # stale port leases, databases whose agent is gone
        assert resource.check is not None
        problems += resource.check(settings, found)
    problems += _orphan_branches(settings, agents, entries)
    if fix:
        for p in problems:
            if p["fix"]:
                _repair_one(settings, p)
    from . import pool

    try:
        problems += pool.check(settings, fix)  # the pool checks and repairs its own entries (issue 12)
    except GroveError as exc:
        problems.append(_problem("corrupt_pool_registry", exc.message, None, hint=exc.hint))
    remaining = [p for p in problems if not p["fixed"]]
    return {"healthy": not remaining, "problems": problems, "fixed": len(problems) - len(remaining),
            "backups": preserve.listing(settings.repo, preserve.BACKUP),
            "salvages": preserve.listing(settings.repo, preserve.SALVAGE)}


def _stillborn(settings: Settings, fix: bool) -> list[dict]:
    """Worktrees left "locked initializing" by a killed `git worktree add` (issue 10, defect 11)."""
    out = []
    if fix:  # killed before `commondir`: git cannot list any worktree until that one is gone
        out += [dict(_problem("stillborn_worktree", f"{gone}: `git worktree add` was killed before it wrote "
                              "commondir; git could list no worktree", "remove it (it held nothing)", path=gone),
                     fixed=True) for gone in worktree.repair_unlisted_stillborn(settings)]
    for w in git.worktrees(settings.repo):
        if not worktree.is_stillborn(w):
            continue
        p = _problem("stillborn_worktree", f"{w['path']}: `git worktree add` was killed midway (locked "
                     "'initializing', no HEAD); `git rev-list --all` and `git gc` fail until it is removed",
                     "remove the entry and its empty directory (it holds nothing but .git)", path=w["path"])
        if fix:
            p["fixed"] = worktree.repair_stillborn(settings, Path(w["path"]))
            if not p["fixed"]:
                p["fix"] = None
                p["hint"] = "it is outside trees/ or holds files: look at it and remove it by hand"
        out.append(p)
    return out


def _interrupted_fast_forwards(settings: Settings, fix: bool) -> list[dict]:
    """A checkout a killed merge left between the old and the new base (issue 20, item 4): its
    files are the merge's, not someone's edits; --fix finishes the fast-forward."""
    out = []
    for w in git.worktrees(settings.repo):
        left = os.path.isdir(w["path"]) and ffwd.pending(Path(w["path"]))
        if not left:
            continue
        p = _problem("interrupted_fast_forward", f"{w['path']}: a merge was killed while bringing it from "
                     f"{left['old'][:10]} to {left['new'][:10]}; its files are part-way between the two",
                     "finish the fast-forward (an edited file in the way is never overwritten)", path=w["path"])
        if fix:
            done, why = ffwd.finish(Path(w["path"])) or (True, "")
            p["fixed"] = done
            if not done:
                p["fix"], p["hint"] = None, why
        out.append(p)
    return out


def _interrupted_syncs(settings: Settings, agents: dict, fix: bool) -> list[dict]:
    """An agent worktree a killed `grove sync` left mid-merge (issue 20, item 6): git's index still
    hides Grove's files but the base's files are half in; --fix rolls it back or finishes it, after
    salvaging whatever differs."""
    from . import sync

    out = []
    for adw_id, s in agents.items():
        wt = Path(s["worktree_path"]) if s else None
        if wt is None or not (wt / ".git").is_file() or sync.interrupted(wt) is None:
            continue
        p = _problem("interrupted_sync", f"{wt}: `grove sync` was killed midway; the base's files are part-way in",
                     "roll it back to the branch's tip (salvaged first) or finish it; then sync again",
                     adw_id=adw_id, path=str(wt))
        if fix:
            try:
                with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is busy"):
                    p["recovered"] = sync.recover(settings, s, wt)
                p["fixed"] = True
            except GroveError as exc:
                p["fix"], p["hint"] = None, exc.message
        out.append(p)
    return out


def _state_dirs(settings: Settings) -> list[str]:
    root = settings.agents_path
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_agent(settings: Settings, adw_id: str, s: dict, known: bool, exists: bool) -> list[dict]:
    path = s["worktree_path"]
    if _busy(settings, adw_id):
        return []  # a setup or teardown is running on it right now: its state is in motion
    if known and exists:
        broken = _broken_checkout(Path(path))
        if broken:
            return [_problem("broken_worktree", f"{adw_id}: {broken}", None, adw_id=adw_id, path=path,
                             hint=f"run `git worktree repair {path}` in the main checkout, or "
                                  f"`grove teardown --adw-id {adw_id} --force` (its files go to the archive)")]
        done = s.get("steps", {})
        # The steps every setup has recorded since issue 10 (a state from before include and
        # submodules existed is complete without them). An adopted worktree was made by the user,
        # not by setup's chain: it has no "worktree" step, and adopt finishes it.
        adopted = bool(s.get("adopted"))
        expected = ("ports_env", "env", "repoint", "install", "db") if adopted else \
            ("worktree", "ports_env", "env", "repoint", "install", "db")
        missing = [n for n in expected if n not in done]
        if s["status"] == "created" and missing:
            again = f"inv adopt {shlex.quote(path)}" if adopted else f"inv setup --adw-id {adw_id}"
            return [_problem("incomplete_setup", f"{adw_id}: setup stopped before {missing[0]}", None,
                             adw_id=adw_id, hint=f"run `{again}` again to finish it")]
        return []
    if known and not exists:
        return [_problem("directory_gone", f"{adw_id}: git lists {path} but the directory is gone",
                         "prune the entry, release the slot, archive the state (the branch stays)",
                         adw_id=adw_id, path=path)]
    if exists:
        return [_problem("directory_unknown_to_git", f"{adw_id}: {path} exists but git does not know it",
                         "move the directory to agents/.archive/, release the slot, archive the state",
                         adw_id=adw_id, path=path)]
    return [_problem("orphaned_state", f"{adw_id}: state says {path} but there is no directory and git has no entry",
                     "release the slot and archive the state (the branch stays)", adw_id=adw_id, path=path)]


def _broken_checkout(path: Path) -> str | None:
    """Why git run in this worktree would not read it (its `.git` file deleted or wrong), or None;
    read from the file itself, no subprocess (issue 20, item 13)."""
    try:
        admin = git.own_admin_dir(path)
    except (OSError, UnicodeDecodeError):
        return f"{path}/.git is missing or unreadable: git run there reads the main checkout instead"
    if not (admin / "HEAD").is_file():
        return f"{path}/.git points at {admin}, which is not a worktree's git directory"
    return None


def _busy(settings: Settings, adw_id: str) -> bool:
    try:
        with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, "busy"):
            return False
    except GroveError:
        return True


def _orphan_branches(settings: Settings, agents: dict, entries: dict) -> list[dict]:
    """Branches Grove's journal says it created, with no agent, no worktree and no archived state.

    Only recorded branches count: a user's `adw/legacy` or `feature/auth/login-form` is never
    reported or touched (issue 10, defect 1). A branch kept by teardown has an archived state.
    """
    live = {s["branch"] for s in agents.values() if s} | {w["branch"] for w in entries.values() if w["branch"]}
    recorded = {s.get("branch") for s in state.archived(settings)}
    out = []
    for branch, info in sorted(owned.entries(settings, "branch").items()):
        if branch in live or branch in recorded or not git.branch_exists(settings.repo, branch):
            continue
        out.append(_problem("orphan_branch", f"branch {branch} (made by Grove for {info.get('adw_id')}) has no "
                            "agent, worktree or archived state", "delete it, its tip saved under refs/grove-backup/ "
                            "first unless the base contains it", branch=branch, adw_id=info.get("adw_id")))
    return out


def _repair_one(settings: Settings, p: dict) -> None:
    """One repair; a refusal is recorded on its problem and the others still run."""
    try:
        _repair(settings, p)
    except GroveError as exc:
        p["fixed"] = False
        p["hint"] = f"not fixed: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")


def _live_ids(settings: Settings) -> set[str]:
    """The agents there are, for the resources' checks: a state dir (a corrupt state counts) or a
    directory under trees/."""
    live = set(_state_dirs(settings))
    if settings.trees_path.is_dir():
        live |= {p.name for p in settings.trees_path.iterdir()}
    return live


def _repair(settings: Settings, p: dict) -> None:
    from .cleanup import _base_ref

    kind = p["kind"]
    if kind == "stale_git_entry":
        p["backup_refs"] = worktree.remove(settings, Path(p["path"]), salvage=False)["worktree_backup_refs"]
        p["fixed"] = git.worktree_for(settings.repo, Path(p["path"])) is None
        if not p["fixed"]:
            p["hint"] = f"git keeps the entry (locked?): `git worktree unlock {p['path']}`, then doctor --fix again"
    elif kind in table.REPAIRS:
        repair = table.REPAIRS[kind].repair
        assert repair is not None
        repair(settings, p)
    elif kind == "orphan_branch":
        p["backup_ref"] = worktree.delete_branch(settings, p["branch"], _base_ref(settings, None))
        p["fixed"] = True
    elif kind in ("directory_gone", "directory_unknown_to_git", "orphaned_state"):
        adw_id = p["adw_id"]
        with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is busy"):
            path = Path(p["path"])
            if kind == "directory_gone":
                p["backup_refs"] = worktree.remove(settings, path, salvage=False)["worktree_backup_refs"]
                if git.worktree_for(settings.repo, path) is not None:
                    raise GroveError(f"git keeps the entry for {path} (locked?)",
                                     hint=f"git worktree unlock {path}, then doctor --fix again")
            if kind == "directory_unknown_to_git" and path.exists():
                p["moved_to"] = str(worktree.quarantine(settings, adw_id, path))
            ports.release(settings, adw_id)
            note = f"archived by inv doctor --fix: {kind}"
            p["archive"] = str(state.archive_locked(settings, adw_id, lambda s: s.update(doctor=note)))
        p["fixed"] = True
    elif kind == "unknown_directory":
        p["moved_to"] = str(worktree.quarantine(settings, Path(p["path"]).name, Path(p["path"])))
        p["fixed"] = True


def print_report(report: dict) -> None:
    saved = f"{len(report['backups'])} backup ref(s), {len(report['salvages'])} salvage ref(s)"
    for row in report["backups"] + report["salvages"]:
        print(f"{'saved':<8} {row['ref']}  {row['date']}")
    if not report["problems"]:
        print(f"healthy: every agent has its state, its directory and git's entry; the registry is clean; {saved}")
        return
    for p in report["problems"]:
        mark = "fixed" if p["fixed"] else "PROBLEM"
        # Hints in the report name commands; said as the program the user ran (issue 21).
        hint = speak(p.get("hint") or (f"fix: {p['fix']} (inv doctor --fix)" if p["fix"] else "fix by hand"))
        print(f"{mark:<8} {p['kind']:<26} {p['detail']}")
        if not p["fixed"]:
            print(f"{'':<8} {'':<26} {hint}")
    print("healthy" if report["healthy"] else f"{sum(not p['fixed'] for p in report['problems'])} problem(s) remain")
