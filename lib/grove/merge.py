"""The merge queue: agents' branches come back into the base one at a time, validated, all or nothing.

The user's checkout is never where the merge happens. Each branch is merged in a Grove-owned,
detached integration worktree (trees/.grove-merge) on top of the tip so far; a conflict or a
failed validation drops that branch and the queue goes on. Only at the end does the base move,
by a compare-and-swap (`git update-ref <base> <new> <old>`), after the push when --push.
A rejected push means another machine moved the remote first: fetch, redo the queue on its
tip, validate again, push again (the remote's atomic ref update is the lock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import git, locks, proc, state, worktree
from .config import Settings
from .errors import GroveError, bad_input
from .faults import fault
from .report import Reporter

OP = "merge"
INTEGRATION = ".grove-merge"
MERGEABLE = ("completed", "conflict")


@dataclass
class Plan:
    base: str
    strategy: str
    validate: str
    push: bool
    dry_run: bool
    queue: list[dict] = field(default_factory=list)  # states, in merge order
    skipped: list[dict] = field(default_factory=list)  # results for ids that cannot be merged


def select(settings: Settings, ids: list[str], epic: str | None, all_: bool) -> tuple[list[dict], list[dict]]:
    """The states to merge, in order, and a 'skipped' result for each requested one that cannot be."""
    if ids:
        chosen = [state.require(settings, i) for i in ids]
    elif epic or all_:
        chosen = [state.load(settings, i) for i in state.all_ids(settings)]
        chosen = [s for s in chosen if s["status"] == "completed" and (not epic or s.get("epic_id") == epic)]
        chosen.sort(key=lambda s: (s.get("completed_at") or "", s.get("created_at") or "", s["adw_id"]))
    else:
        raise bad_input("say what to merge: --adw-id ID (repeatable), --epic E, or --all")
    queue, skipped = [], []
    for s in chosen:
        if s["status"] not in MERGEABLE:
            skipped.append(_result(s, "skipped", reason=f"status is {s['status']}, not completed"))
        elif not git.branch_exists(settings.repo, s["branch"]):
            skipped.append(_result(s, "skipped", reason=f"branch {s['branch']} does not exist"))
        else:
            queue.append(s)
    return queue, skipped


def _result(s: dict, outcome: str, **extra) -> dict:
    base = {"adw_id": s["adw_id"], "branch": s["branch"], "outcome": outcome, "commits": [], "conflict_files": [],
            "seconds": 0.0, "reason": None}
    base.update(extra)
    return base


def run(settings: Settings, plan: Plan, cleanup: bool = False, report: Reporter | None = None) -> dict:
    """Merge the queue; returns the summary documented in docs/json.md."""
    report = report or Reporter(quiet=True)
    git.check_branch_name(settings.repo, plan.base)
    with locks.locked(settings.lock_path("merge"), settings.lock_timeout,
                      "another inv merge is running on this repository"):
        if plan.dry_run:
            return _dry_run(settings, plan)
        checkout = _checkout_of_base(settings, plan.base)
        if checkout and git.git(checkout, "status", "--porcelain", "--untracked-files=no"):
            raise GroveError(f"{plan.base} is checked out in {checkout} with uncommitted changes; nothing was merged",
                             hint="commit or stash them there, or check out another branch, then merge again")
        summary = _merge_and_publish(settings, plan, checkout, report)
        _record(settings, summary["results"])
    if cleanup:
        from .cleanup import teardown

        for r in summary["results"]:
            if r["outcome"] == "merged":
                r["cleanup"] = teardown(settings, r["adw_id"], delete_branch=True, report=report)
    summary["results"] = plan.skipped + summary["results"]
    return summary


def _checkout_of_base(settings: Settings, base: str) -> Path | None:
    entry = next((w for w in git.worktrees(settings.repo) if w["branch"] == base), None)
    return Path(entry["path"]) if entry else None


def _start_tip(settings: Settings, plan: Plan) -> tuple[str, str | None, str]:
    """(tip to build on, remote tip or None, local base). With --push the remote's tip counts."""
    local = git.rev(settings.repo, f"refs/heads/{plan.base}")
    if local is None:
        raise bad_input(f"base branch {plan.base!r} does not exist locally")
    if not plan.push:
        return local, None, local
    worktree.fetch_base(settings, plan.base)
    remote = git.rev(settings.repo, f"refs/remotes/{settings.remote}/{plan.base}")
    if remote is None or git.ok(settings.repo, "merge-base", "--is-ancestor", remote, local):
        return local, remote, local
    if git.ok(settings.repo, "merge-base", "--is-ancestor", local, remote):
        return remote, remote, local
    raise GroveError(f"local {plan.base} and {settings.remote}/{plan.base} have diverged; nothing was merged",
                     hint=f"reconcile them (git pull --rebase on {plan.base}), then merge again")


def _merge_and_publish(settings: Settings, plan: Plan, checkout: Path | None, report: Reporter) -> dict:
    before = None
    for attempt in range(1, settings.push_retries + 2):
        start, remote, local = _start_tip(settings, plan)
        before = before or local
        tip, results = _build(settings, plan, start, report)
        fault(OP, "before", "publish")
        if plan.push and tip != remote:
            pushed = proc.run(["git", "-C", settings.repo, "push", "--porcelain", "--quiet", settings.remote,
                               f"{tip}:refs/heads/{plan.base}"], check=False, timeout=settings.git_timeout)
            if pushed.returncode != 0:
                if attempt <= settings.push_retries and ("rejected" in pushed.stdout + pushed.stderr):
                    report.say(f"push rejected ({proc.tail(pushed.stderr, 1)}); redoing the queue on the new tip")
                    continue
                raise GroveError(f"push to {settings.remote} failed: {proc.tail(pushed.stderr)}; "
                                 f"{plan.base} is unchanged here and there")
        if tip != local:
            _move_base(settings, plan.base, local, tip, checkout)
        fault(OP, "after", "publish")
        return {"base": plan.base, "strategy": plan.strategy, "dry_run": False, "base_before": before,
                "base_after": tip, "pushed": bool(plan.push), "attempts": attempt, "results": results}
    raise GroveError(f"push to {settings.remote} was rejected {settings.push_retries + 1} times; nothing was merged",
                     hint="others keep moving the remote: retry later or raise ADW_PUSH_RETRIES")


def _move_base(settings: Settings, base: str, old: str, new: str, checkout: Path | None) -> None:
    """Compare-and-swap the base; a clean checkout of it is brought along, a moved base refuses."""
    if checkout is not None:
        # --ff-only moves the branch, index and files together, and refuses if they moved meanwhile.
        out = proc.run(["git", "-C", checkout, "merge", "--ff-only", "--quiet", new], check=False)
        if out.returncode == 0:
            return
        raise GroveError(f"could not bring {checkout} along to the merged {base}: {proc.tail(out.stderr)}",
                         hint=f"run `git merge --ff-only {new}` there once it is clean")
    out = proc.run(["git", "-C", settings.repo, "update-ref", "-m", "grove merge", f"refs/heads/{base}", new, old],
                   check=False)
    if out.returncode != 0:
        raise GroveError(f"{base} moved while merging; nothing was merged", hint="run inv merge again")


# -- building the merged tip in the integration worktree -------------------------------------


def _integration(settings: Settings, tip: str) -> Path:
    """The detached worktree merges happen in, reset to ``tip`` (whatever a crash left in it)."""
    path = settings.trees_path / INTEGRATION
    if git.worktree_for(settings.repo, path) is None:
        if path.exists():
            worktree.safe_rmtree(settings, path)
        settings.trees_path.mkdir(parents=True, exist_ok=True)
        with worktree.repo_lock(settings):
            git.prune_entry(settings.repo, path)
            git.git(settings.repo, "worktree", "add", "--quiet", "--detach", path, tip)
        return path
    for abort in (("merge", "--abort"), ("rebase", "--abort")):
        proc.run(["git", "-C", path, *abort], check=False)
    git.git(path, "checkout", "--quiet", "--detach", "--force", tip)
    git.git(path, "clean", "-ffdq")
    return path


def _build(settings: Settings, plan: Plan, tip: str, report: Reporter) -> tuple[str, list[dict]]:
    wt = _integration(settings, tip)
    results = []
    for s in plan.queue:
        began = time.monotonic()
        commits = _new_commits(settings, s, tip)
        if not commits:
            results.append(_result(s, "merged", reason="already in the base"))
            continue
        fault(OP, "before", s["adw_id"])
        outcome, new_tip, extra = _merge_one(settings, plan, wt, s, tip)
        extra.update(commits=commits, seconds=round(time.monotonic() - began, 3))
        results.append(_result(s, outcome, **extra))
        report.say(f"{'✓' if outcome == 'merged' else '✗'} {s['adw_id']:<12} {outcome:<18} {s['branch']}"
                   + (f"  {extra.get('reason')}" if extra.get("reason") else ""))
        if outcome == "merged":
            tip = new_tip  # HEAD is already there
        else:  # an aborted rebase or a failed validation leaves HEAD elsewhere
            git.git(wt, "checkout", "--quiet", "--detach", "--force", tip)
            git.git(wt, "clean", "-ffdq")
    return tip, results


def _new_commits(settings: Settings, s: dict, tip: str) -> list[str]:
    """The branch's commits not yet in ``tip``; [] when its changes are already there
    (by ancestry, patch-id or tree: squash- and rebase-merged branches count)."""
    branch = f"refs/heads/{s['branch']}"
    commits = git.commits_between(settings.repo, tip, branch)
    return commits if commits and not git.is_merged(settings.repo, branch, tip) else []


def _merge_one(settings: Settings, plan: Plan, wt: Path, s: dict, tip: str) -> tuple[str, str, dict]:
    branch = f"refs/heads/{s['branch']}"
    message = f"Merge {s['branch']} (adw {s['adw_id']})"
    if plan.strategy == "rebase":
        git.git(wt, "checkout", "--quiet", "--detach", "--force", branch)
        attempt = proc.run(["git", "-C", wt, "rebase", "--quiet", tip], check=False)
        abort = ("rebase", "--abort")
    else:
        flags = ["--no-ff", "--no-edit", "-m", message] if plan.strategy == "no-ff" else ["--squash"]
        attempt = proc.run(["git", "-C", wt, "merge", "--quiet", *flags, branch], check=False)
        abort = ("merge", "--abort") if plan.strategy == "no-ff" else ("reset", "--hard", "--quiet", tip)
    if attempt.returncode != 0:
        files = sorted(set(filter(None, git.git(wt, "diff", "--name-only", "--diff-filter=U").split("\n"))))
        proc.run(["git", "-C", wt, *abort], check=False)
        if not files:
            raise GroveError(f"git could not merge {s['branch']}: {proc.tail(attempt.stderr or attempt.stdout)}")
        return "conflict", tip, {"conflict_files": files, "reason": f"conflict in {', '.join(files)}"}
    if plan.strategy == "squash":
        git.git(wt, "commit", "--quiet", "--no-verify", "-m", f"{s['branch']} (adw {s['adw_id']}), squashed")
    new_tip = git.git(wt, "rev-parse", "HEAD")
    leaks = _generated_files(settings, tip, new_tip, s)
    if leaks:
        return "validation_failed", tip, {"reason": f"would commit Grove-generated files: {', '.join(leaks)}"}
    if plan.validate:
        env = {"ADW_ID": s["adw_id"], "ADW_BRANCH": s["branch"], "ADW_BASE_BRANCH": plan.base}
        check = proc.run(["bash", "-c", plan.validate], cwd=wt, env=env, check=False, timeout=settings.install_timeout)
        if check.returncode != 0:
            return "validation_failed", tip, {"exit_code": check.returncode,
                                              "reason": f"validation exited {check.returncode}: "
                                                        f"{proc.tail(check.stdout + check.stderr, 5)}"}
    return "merged", new_tip, {"merged_commit": new_tip}


def _generated_files(settings: Settings, old: str, new: str, s: dict) -> list[str]:
    """Files from the setup chain that must never enter a merge: .ports.env, and worktree paths."""
    changed = set(filter(None, git.git(settings.repo, "diff", "--name-only", old, new).split("\n")))
    leaks = sorted(p for p in changed if Path(p).name == ".ports.env")
    for name in settings.path_configs:
        if name in changed and s["worktree_path"] in git.git(settings.repo, "show", f"{new}:{name}", check=False):
            leaks.append(f"{name} (holds {s['worktree_path']})")
    return leaks


def _record(settings: Settings, results: list[dict]) -> None:
    """Statuses follow outcomes, after the base moved: merged, conflict, or failed."""
    for r in results:
        if r["outcome"] == "merged":
            state.set_status(settings, r["adw_id"], "merged", by="grove merge",
                             merged_commit=r.get("merged_commit"), conflict_files=[])
        elif r["outcome"] == "conflict":
            state.set_status(settings, r["adw_id"], "conflict", by="grove merge", error=r["reason"],
                             conflict_files=r["conflict_files"])
        elif r["outcome"] == "validation_failed":
            state.set_status(settings, r["adw_id"], "failed", by="grove merge", error=r["reason"])


def _dry_run(settings: Settings, plan: Plan) -> dict:
    """Predict every outcome in order with `git merge-tree --write-tree`; no ref or file changes."""
    # No fetch in a dry run: with --push, predict against the remote tip as last fetched.
    tracking = git.rev(settings.repo, f"refs/remotes/{settings.remote}/{plan.base}") if plan.push else None
    tip = tracking or git.rev(settings.repo, f"refs/heads/{plan.base}")
    if tip is None:
        raise bad_input(f"base branch {plan.base!r} does not exist locally")
    before, results = tip, []
    for s in plan.queue:
        branch = f"refs/heads/{s['branch']}"
        commits = _new_commits(settings, s, tip)
        if not commits:
            results.append(_result(s, "merged", reason="already in the base"))
            continue
        out = proc.run(["git", "-C", settings.repo, "merge-tree", "--write-tree", "--name-only", "--no-messages",
                        tip, branch], check=False)
        lines = out.stdout.split("\n")
        if out.returncode == 1:
            files = sorted(set(line for line in lines[1:] if line))
            results.append(_result(s, "conflict", commits=commits, conflict_files=files,
                                   reason=f"conflict in {', '.join(files)}"))
            continue
        if out.returncode != 0:
            raise GroveError(f"git merge-tree failed for {s['branch']}: {proc.tail(out.stderr)}")
        # A dangling commit (no ref) lets the next prediction build on this one.
        tip = git.git(settings.repo, "commit-tree", lines[0], "-p", tip, "-p", branch, "-m", "grove dry run")
        results.append(_result(s, "merged", commits=commits))
    return {"base": plan.base, "strategy": plan.strategy, "dry_run": True, "base_before": before,
            "base_after": before, "pushed": False, "attempts": 0, "results": plan.skipped + results}


def print_summary(summary: dict) -> None:
    verb = "would merge" if summary["dry_run"] else "merged"
    for r in summary["results"]:
        print(f"{r['adw_id']:<12} {r['outcome']:<18} {r['branch']:<40} {r['reason'] or ''}")
    merged = sum(r["outcome"] == "merged" for r in summary["results"])
    moved = f"{(summary['base_before'] or '')[:10]} -> {(summary['base_after'] or '')[:10]}"
    print(f"{verb} {merged}/{len(summary['results'])} into {summary['base']} ({moved})"
          + (", pushed" if summary["pushed"] else ""))
