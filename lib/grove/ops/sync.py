"""`inv sync`: bring the base's new commits into an agent's branch, inside its worktree (issue 13).

The agent resolves a conflict where it works, before the merge queue meets it.

Grove's files must not get in the way. Setup rewrites tracked configs (repointed paths, ports laid
over a tracked .env) and hides them with skip-worktree, so no absolute path is committed; but
then `git merge main` refuses ("local changes would be overwritten"). Sync therefore:
1. refuses when the worktree has uncommitted changes to tracked files, or when a hidden file holds
   more than Grove's own rewrite (an agent's deliberate edit: `inv env.stage` makes it committable).
   Nothing uncommitted is ever touched: sync refuses rather than salvages;
2. puts the committed version of each hidden file back and un-hides it;
3. merges (or rebases onto) the base's tip;
4. on success re-applies Grove's files from the new committed versions and hides them again.
   On a conflict it stops in git's normal conflicted state with the agent's status `conflict`;
   after resolving and committing, running `inv sync` again re-applies Grove's files, and
   `inv status --set completed` makes the branch mergeable again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..core import events, git, ids, locks, proc, state
from ..core.config import Settings
from ..core.errors import BAD_INPUT, GroveError, bad_input
from ..core.faults import fault
from ..core.report import Reporter
from ..resources import envfiles, hidden, ports, repoint, table
from ..safety import preserve
from . import steps, worktree

OP = "sync"
STRATEGIES = ("merge", "rebase")


def operation_in_progress(wt: Path) -> str | None:
    """'merge', 'rebase' or 'cherry-pick' when the worktree is in the middle of one, else None."""
    if not (wt / ".git").exists():  # not a worktree: git would answer for the repo around it
        return None
    names = {"MERGE_HEAD": "merge", "rebase-merge": "rebase", "rebase-apply": "rebase",
             "CHERRY_PICK_HEAD": "cherry-pick"}
    args = [a for name in names for a in ("--git-path", name)]
    out = proc.run(["git", "-C", wt, "rev-parse", "--path-format=absolute", *args], check=False)
    if out.returncode != 0:
        return None
    for found, kind in zip(out.stdout.splitlines(), names.values()):
        if os.path.exists(found):
            return kind
    return None


def sync(settings: Settings, adw_id: str, strategy: str = "merge", fetch: bool = True,
         report: Reporter | None = None) -> dict:
    """Merge or rebase the agent's branch onto its base's tip; returns the document in docs/json.md."""
    report = report or Reporter(quiet=True)
    if strategy not in STRATEGIES:
        raise bad_input(f"unknown sync strategy {strategy!r}", f"one of: {', '.join(STRATEGIES)}")
    ids.check_id(adw_id)
    s = state.require(settings, adw_id)
    if s["status"] in ("merged", "cleaned"):
        raise bad_input(f"{adw_id} is {s['status']}: there is nothing to sync")
    base = s.get("base_branch") or settings.base_branch
    git.check_branch_name(settings.repo, base)
    wt = Path(s["worktree_path"])
    if not wt.is_dir() or git.worktree_for(settings.repo, wt) is None:
        raise GroveError(f"{adw_id} has no worktree at {wt}", hint="run `inv doctor`, or set it up again")
    with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is being set up or torn down right now"):
        recovered = recover(settings, s, wt)
        _refuse_unsafe(settings, s, wt)
        tip, source = base_tip(settings, base, fetch, report)
        head = git.git(wt, "rev-parse", "HEAD")
        result = {"adw_id": adw_id, "branch": s["branch"], "base": base, "base_commit": tip, "from": source,
                  "strategy": strategy, "outcome": "up_to_date", "head_before": head, "head_after": head,
                  "incoming_commits": len(git.commits_between(settings.repo, head, tip)), "conflict_files": [],
                  "status": s["status"], "reapplied": [], "backup": None, "recovered": recovered}
        if result["incoming_commits"]:
            _refuse_clobbering(wt, head, tip)
            _write_intent(wt, {"head_before": head, "tip": tip, "strategy": strategy, "branch": s["branch"]})
            _integrate(settings, s, wt, tip, strategy, result)
        if result["outcome"] != "conflict":
            result["reapplied"] = reapply(settings, s, wt)
        result["status"] = _record(settings, s, result)
        _intent(wt).unlink(missing_ok=True)
    mark = "✗" if result["outcome"] == "conflict" else "✓"
    report.say(f"{mark} sync {adw_id}: {result['outcome']} with {source} ({result['incoming_commits']} new commit(s))"
               + (f"; conflict in {', '.join(result['conflict_files'])}" if result["conflict_files"] else ""))
    return result


def _refuse_unsafe(settings: Settings, s: dict, wt: Path) -> None:
    """Everything that would put uncommitted work at risk, checked before anything changes (exit 1)."""
    adw_id = s["adw_id"]
    busy = operation_in_progress(wt)
    if busy:
        raise GroveError(f"{wt} is in the middle of a {busy}",
                         hint=f"resolve and commit it (git {busy} --continue) or abort it (git {busy} --abort), "
                              "then sync again")
    on = git.git(wt, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if on != s["branch"]:
        raise GroveError(f"{wt} is on {on or 'a detached HEAD'}, not on {s['branch']}",
                         hint=f"git switch {s['branch']} there first")
    dirty = [line[3:] for line in git.git(wt, "status", "--porcelain", "--untracked-files=no").split("\n") if line]
    if dirty:
        raise GroveError(f"{wt} has uncommitted changes: {', '.join(dirty[:5])}"
                         + (" ..." if len(dirty) > 5 else ""),
                         hint="commit or stash them first: sync never touches uncommitted work")
    edited = hidden.edited_hidden(settings, s, wt)
    if edited:
        raise GroveError(f"{', '.join(edited)} in {wt} changed beyond Grove's own rewrite (they are hidden from git)",
                         hint=f"to keep the change: `inv env.stage --adw-id {adw_id}`, then commit; to drop it: "
                              f"`git update-index --no-skip-worktree FILE && git checkout FILE`; then sync again")


def _refuse_clobbering(wt: Path, head: str, tip: str) -> None:
    """The base may have started tracking a file the agent has as an ignored one (a force-added
    fixtures/local.db): git would overwrite the agent's copy without a word. Refused, nothing changed."""
    clobbered = git.ignored_in_the_way(wt, head, tip)
    if clobbered:
        shown = ", ".join(clobbered[:5]) + (" ..." if len(clobbered) > 5 else "")
        raise GroveError(f"syncing {wt} would overwrite ignored files the base now tracks: {shown}; nothing changed",
                         hint="move them aside (they are the agent's: keep a copy), then sync again")


def base_tip(settings: Settings, base: str, fetch: bool, report: Reporter) -> tuple[str, str]:
    """The base's newest tip: (commit, where from). The local base and the remote's, whichever holds the
    other; merges land on the local base first (`inv merge` without --push)."""
    remote_ref = f"refs/remotes/{settings.remote}/{base}"
    if fetch and settings.remote and git.has_remote(settings.repo, settings.remote):
        try:
            worktree.fetch_base(settings, base)
        except GroveError as exc:
            if exc.code == BAD_INPUT and git.rev(settings.repo, f"refs/heads/{base}") is None:
                raise
            report.warn(f"{exc.message}; using what is known locally")
    local, remote = git.rev(settings.repo, f"refs/heads/{base}"), git.rev(settings.repo, remote_ref)
    if local is None and remote is None:
        raise bad_input(f"base branch {base!r} does not exist locally or on {settings.remote or 'any remote'}")
    if remote is None or local == remote or (local and git.ok(settings.repo, "merge-base", "--is-ancestor",
                                                              remote, local)):
        return local or "", base
    if local is None or git.ok(settings.repo, "merge-base", "--is-ancestor", local, remote):
        return remote, f"{settings.remote}/{base}"
    raise GroveError(f"local {base} and {settings.remote}/{base} have diverged",
                     hint=f"reconcile them (git pull --rebase on {base}), then sync again")


def _integrate(settings: Settings, s: dict, wt: Path, tip: str, strategy: str, result: dict) -> None:
    """Un-hide Grove's files, then merge or rebase; a failure that is not a conflict changes nothing."""
    # Everything below works on a private copy of the index, which replaces the real one only once
    # git is done: a kill midway leaves no index.lock and an index that still hides Grove's files,
    # and the intent written before lets a re-run or doctor --fix finish or roll back (issue 20, item 6).
    grove_files = hidden.hidden_files(wt)
    private = git.own_admin_dir(wt) / _PRIVATE
    env = _private_index(wt, private)
    if grove_files:
        # The committed versions go back in place: the index already holds them (nothing is dirty).
        proc.run(["git", "-C", wt, "update-index", "--no-skip-worktree", "--", *grove_files], env=env)
        proc.run(["git", "-C", wt, "checkout", "--quiet", "--", *grove_files], env=env)
    fault(OP, "before", "merge")
    if strategy == "merge":
        message = f"Merge {result['base']} ({tip[:10]}) into {s['branch']} (inv sync)"
        attempt = proc.run(["git", "-C", wt, "merge", "--no-edit", "-m", message, tip], env=env, check=False)
    else:
        head = result["head_before"]
        if not git.ok(settings.repo, "merge-base", "--is-ancestor", head, tip):
            # A rebase rewrites the agent's commits: the originals stay reachable (issue 10).
            result["backup"] = preserve.backup(settings.repo, s["branch"], head,
                                               f"before inv sync --strategy rebase of {s['adw_id']}")
        # -c rebase.updateRefs=false: a user's `rebase.updateRefs=true` would also move every other
        # branch pointing into the rebased commits (their own, another agent's); any git reads it.
        attempt = proc.run(["git", "-c", "rebase.updateRefs=false", "-C", wt, "rebase", tip], env=env, check=False)
    fault(OP, "after", "merge")
    conflicted = sorted(set(filter(None, proc.run(["git", "-C", wt, "diff", "--name-only", "--diff-filter=U"],
                                                  env=env).stdout.split("\n"))))
    if attempt.returncode != 0 and conflicted:
        os.replace(private, git.own_admin_dir(wt) / "index")  # git's normal conflicted state, for the agent
        result.update(outcome="conflict", conflict_files=conflicted, head_after=git.git(wt, "rev-parse", "HEAD"))
        return
    if attempt.returncode != 0:
        if operation_in_progress(wt):
            proc.run(["git", "-C", wt, strategy, "--abort"], env=env, check=False)
        private.unlink(missing_ok=True)  # the real index never changed
        reapply(settings, s, wt)
        _intent(wt).unlink(missing_ok=True)
        raise GroveError(f"git {strategy} of {tip[:10]} in {wt} failed: "
                         f"{proc.tail(attempt.stderr or attempt.stdout)}; nothing changed",
                         hint="fix what git names (often an untracked file in the way), then sync again")
    os.replace(private, git.own_admin_dir(wt) / "index")
    result.update(outcome="merged" if strategy == "merge" else "rebased",
                  head_after=git.git(wt, "rev-parse", "HEAD"))


# -- a sync a kill interrupted (issue 20, item 6) ---------------------------------------------

_INTENT = "grove-sync.json"
_PRIVATE = "grove-sync.index"
_GIT_STATE = {"merge": ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE"), "rebase": ("rebase-merge", "rebase-apply")}


def _intent(wt: Path) -> Path:
    return git.own_admin_dir(wt) / _INTENT


def interrupted(wt: Path) -> dict | None:
    """What a sync that was killed midway in ``wt`` meant to do, or None."""
    try:
        data = json.loads(_intent(wt).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"head_before", "tip", "strategy", "branch"} <= data.keys() else None


def _write_intent(wt: Path, data: dict) -> None:
    locks.atomic_write_json(_intent(wt), data)


def _private_index(wt: Path, private: Path) -> dict[str, str]:
    """A fresh private copy of the worktree's index (what a killed run left of one goes first)."""
    for leftover in (private, private.with_name(private.name + ".lock")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(git.own_admin_dir(wt) / "index", private)
    return {"GIT_INDEX_FILE": str(private)}


def recover(settings: Settings, s: dict, wt: Path) -> dict | None:
    """Finish or roll back what a killed sync left in ``wt``; None when nothing was left.

    The caller holds the agent's op lock, so the sync that wrote the intent is not running. First
    whatever differs from the branch's tip is salvaged (trust first: the agent may have worked
    since). Then git's own merge or rebase state, which Grove started, goes; the worktree is reset
    to the branch's tip through a private index (the merge commit when git finished it, else the
    commit before the sync); files the half-done sync added and git can give back go; Grove's
    files are applied and hidden again. A later sync then starts from a clean worktree.
    """
    left = interrupted(wt)
    if left is None:
        return None
    saved, _ = preserve.salvage(settings.repo, s["adw_id"], wt, worktree.generated_files(settings),
                                hidden.edited_hidden(settings, s, wt))
    if saved:
        events.emit(settings, "salvaged", s["adw_id"], ref=saved, worktree=str(wt), why="recovering a killed sync")
    admin = git.own_admin_dir(wt)
    for name in (*_GIT_STATE.get(left["strategy"], ()), _PRIVATE, _PRIVATE + ".lock"):
        target = admin / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    git.git(wt, "symbolic-ref", "HEAD", f"refs/heads/{left['branch']}")  # a rebase leaves HEAD detached
    tip = git.git(wt, "rev-parse", "HEAD")
    grove_files = hidden.hidden_files(wt)

    def unhide(env: dict[str, str]) -> None:  # so the reset writes them too; reapply hides them again
        if grove_files:
            proc.run(["git", "-C", wt, "update-index", "--no-skip-worktree", "--", *grove_files], env=env)

    worktree.reset_privately(settings, wt, tip, prepare=unhide)
    removed = _drop_files_git_gives_back(wt, left["head_before"], left["tip"])
    reapply(settings, s, wt)
    _intent(wt).unlink(missing_ok=True)
    return {"outcome": "finished" if tip != left["head_before"] else "rolled_back", "salvage_ref": saved,
            "removed": removed}


def _drop_files_git_gives_back(wt: Path, before: str, tip: str) -> list[str]:
    """Untracked files the interrupted sync wrote: added by the base, and byte for byte the base's."""
    added = [p for p in git.git(wt, "diff", "--name-only", "--diff-filter=A", "--no-renames", "-z", before, tip)
             .split("\0") if p]
    tracked = set(git.git(wt, "ls-files", "-z", "--", *added).split("\0")) if added else set()
    candidates = [p for p in added if p not in tracked and os.path.isfile(wt / p) and not os.path.islink(wt / p)]
    if not candidates:
        return []
    wanted: dict[str, str] = {}
    for entry in git.git(wt, "ls-tree", "-z", tip, "--", *candidates).split("\0"):
        if entry:
            meta, _, path = entry.partition("\t")
            wanted[path] = meta.split()[2]
    hashes = proc.run(["git", "-C", wt, "hash-object", "--stdin-paths"], input="\n".join(candidates) + "\n").stdout.split()
    gone = [p for p, h in zip(candidates, hashes) if wanted.get(p) == h]
    for p in gone:
        (wt / p).unlink()
    return gone


def reapply(settings: Settings, s: dict, wt: Path) -> list[str]:
    """Grove's files from the committed versions, as setup writes them, hidden again; returns the
    tracked files hidden."""
    values = ports.env_lines(s["ports"]) if s.get("ports") else None
    # An agent with no port claim has no values to write: its env files stay as they are.
    which = tuple(r for r in table.FILES if values is not None or r not in (envfiles.PORTS_ENV, envfiles.ENV))
    _, written = steps.write_files(settings, s["adw_id"], wt, values or {}, which)
    worktree.hide(settings, wt, written)
    return hidden.hidden_files(wt)


def _record(settings: Settings, s: dict, result: dict) -> str:
    """base_commit follows the sync (so `commits` stays the agent's own); a conflict sets the status."""
    def change(st: dict) -> None:
        st["base_commit"] = result["base_commit"]
        st["commits"] = git.commits_between(settings.repo, result["base_commit"], f"refs/heads/{st['branch']}")
        if result["outcome"] != "conflict":
            return
        reason = f"sync with {result['base']}: conflict in {', '.join(result['conflict_files'])}"
        try:
            state.apply_status(st, "conflict", by="grove sync", error=reason,
                               conflict_files=result["conflict_files"])
        except GroveError:  # a status that cannot go to conflict (failed): the result goes in its history
            st.setdefault("history", []).append({"status": st["status"], "at": state.now(), "by": "grove sync",
                                                 "sync": "conflict", "reason": reason})

    if result["outcome"] == "up_to_date" and s.get("base_commit") == result["base_commit"]:
        return s["status"]
    return state.update(settings, s["adw_id"], change)["status"]
