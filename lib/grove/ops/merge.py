"""The merge queue: agents' branches come back into the base, validated, all or nothing.

The user's checkout is never where the merge happens. Branches are merged in a Grove-owned,
detached integration worktree (trees/.grove-merge, see integration.py) on top of the tip so far;
a conflict or a failed validation drops that branch and the queue goes on.

Two modes (issue 13):
- sequential: validate after each merge; N branches cost N validations.
- batch (bors, GitHub's merge queue): merge them all, validate once; on failure bisect the
  prefixes for the first one that fails, drop that branch, rebuild the rest on the last good
  prefix and validate again. Culprits are found exactly as sequential mode would find them
  whenever one bad branch keeps every later prefix bad (independent failures).

Publishing is one step (issue 10, defect 7), under the merge lock:
1. re-read the local base; if it moved since the queue was built, redo the queue on its new tip;
2. with --push, push with --force-with-lease (a rejected or stale push also means: redo);
3. move the local base by compare-and-swap, looking up its checkout at that moment: a clean
   checkout is fast-forwarded along, so a checkout made during the run never goes stale.
Nothing before step 2 changes anything the user sees, so failing there exits 1 with "nothing was
merged". After a push nothing raises: a local base that moved during the push is left as it is
and said in ``errors``. Statuses are recorded last and never raise either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..resources import agentdb
from ..core import git, locks, proc, state
from . import worktree
from . import integration
from ..core.config import Settings
from ..core.errors import BAD_INPUT, INTERRUPTED, GroveError, bad_input
from ..core.faults import fault
from ..core.report import Reporter
from ..safety import checkout as ffwd

OP = "merge"
INTEGRATION = integration.NAME
MERGEABLE = ("completed", "conflict")
OUTPUT_TAIL_LINES = 20


@dataclass
class Plan:
    base: str
    strategy: str
    validate: str
    push: bool
    dry_run: bool
    queue: list[dict] = field(default_factory=list)  # states, in merge order
    skipped: list[dict] = field(default_factory=list)  # results for ids that cannot be merged
    batch: bool = False

    @property
    def mode(self) -> str:
        return "batch" if self.batch else "sequential"


def select(settings: Settings, ids: list[str], epic: str | None, all_: bool) -> tuple[list[dict], list[dict]]:
    """The states to merge, in order, and a 'skipped' result for each requested one that cannot be."""
    from .sync import operation_in_progress

    if ids:
        chosen = [state.require(settings, i) for i in ids]
    elif epic or all_:
        loaded = [state.load(settings, i) for i in state.all_ids(settings)]
        # None: torn down by another process since all_ids() listed it.
        chosen = [s for s in loaded if s is not None and s["status"] == "completed"
                  and (not epic or s.get("epic_id") == epic)]
        chosen.sort(key=lambda s: (s.get("completed_at") or "", s.get("created_at") or "", s["adw_id"]))
    else:
        raise bad_input("say what to merge: --adw-id ID (repeatable), --epic E, or --all")
    queue, skipped = [], []
    for s in chosen:
        busy = operation_in_progress(Path(s["worktree_path"]))
        if s["status"] not in MERGEABLE:
            skipped.append(_result(s, "skipped", reason=f"status is {s['status']}, not completed"))
        elif not git.branch_exists(settings.repo, s["branch"]):
            skipped.append(_result(s, "skipped", reason=f"branch {s['branch']} does not exist"))
        elif busy:
            skipped.append(_result(s, "skipped", reason=f"its worktree is in the middle of a {busy}: "
                                                        f"finish it (git {busy} --continue) and commit first"))
        elif uncommitted := _uncommitted(settings, s):
            # Never "merged" (nor cleaned up as merged) while its work is not in a commit (issue 20, item 7).
            shown = ", ".join(uncommitted[:5]) + (" ..." if len(uncommitted) > 5 else "")
            skipped.append(_result(s, "skipped", uncommitted=uncommitted,
                                   reason=f"uncommitted work in its worktree: {shown}; commit it first"))
        else:
            queue.append(s)
    return queue, skipped


def _uncommitted(settings: Settings, s: dict) -> list[str]:
    """Tracked edits, untracked (not ignored) files and edited hidden configs in the agent's worktree."""
    from ..safety import preserve

    wt = Path(s["worktree_path"])
    if not wt.is_dir():
        return []
    problem = preserve.checkout_problem(wt)
    if problem:
        return [f"(cannot read: {problem})"]
    return sorted(set(git.dirty_files(wt)) | set(worktree.hidden_edits(settings, wt)))


def _result(s: dict, outcome: str, **extra) -> dict:
    base = {"adw_id": s["adw_id"], "branch": s["branch"], "outcome": outcome, "commits": [], "conflict_files": [],
            "seconds": 0.0, "reason": None, "status": s["status"]}
    base.update(extra)
    return base


def run(settings: Settings, plan: Plan, cleanup: bool = False, report: Reporter | None = None) -> dict:
    """Merge the queue; returns the summary documented in docs/json.md.

    Raises only when nothing was merged (nothing changed); once something is published, every
    later problem (a status that cannot be recorded, a cleanup that fails) is in ``errors``.
    """
    report = report or Reporter(quiet=True)
    git.check_branch_name(settings.repo, plan.base)
    with locks.locked(settings.lock_path("merge"), settings.lock_timeout,
                      "another inv merge is running on this repository"):
        if plan.dry_run:
            return _dry_run(settings, plan)
        _refuse_dirty_checkout(settings, plan.base)  # up front too: no validation time is wasted
        summary = _merge_and_publish(settings, plan, report)
        _record(settings, summary)
    if cleanup:
        _cleanup(settings, summary, report)
    summary["results"] = plan.skipped + summary["results"]
    return summary


def _checkout_of_base(settings: Settings, base: str) -> Path | None:
    entry = next((w for w in git.worktrees(settings.repo) if w["branch"] == base), None)
    return Path(entry["path"]) if entry else None


def _dirty(checkout: Path) -> bool:
    return bool(git.git(checkout, "status", "--porcelain", "--untracked-files=no"))


def _refuse_dirty_checkout(settings: Settings, base: str) -> None:
    checkout = _checkout_of_base(settings, base)
    if checkout:
        _finish_interrupted(checkout)
    if checkout and _dirty(checkout):
        raise GroveError(f"{base} is checked out in {checkout} with uncommitted changes; nothing was merged",
                         hint="commit or stash them there, or check out another branch, then merge again")


def _finish_interrupted(checkout: Path) -> None:
    """A fast-forward of this checkout that a killed merge left midway is finished first: its files
    are the merge's, not the user's uncommitted changes (issue 20, item 4)."""
    left = ffwd.finish(checkout)
    if left is not None and not left[0]:
        raise GroveError(f"an interrupted merge left {checkout} between two commits and could not finish: {left[1]}",
                         hint="`grove doctor` shows it; move the file git names aside, then merge again")


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


class _Redo(Exception):
    """The base moved before anything was published: build the queue again on its new tip."""


def _merge_and_publish(settings: Settings, plan: Plan, report: Reporter) -> dict:
    before = None
    validations = 0
    logs: list[dict] = []  # every validation's log, passing ones too (issue 21)
    for attempt in range(1, settings.push_retries + 2):
        start, remote, local = _start_tip(settings, plan)
        before = before or local
        wt = integration.reset(settings, start)
        validator = Validator(settings, plan, wt, report) if plan.validate else None
        try:
            if plan.batch:
                tip, results = _build_batch(settings, plan, wt, start, report, validator)
            else:
                tip, results = _build(settings, plan, wt, plan.queue, start, report, validator)
        except KeyboardInterrupt:
            # Ctrl-C, or SIGTERM during a validation (proc.run_tree): the base has not moved, so it is a
            # plain failure with its JSON document, not a traceback and no document (issue 20, item 14c).
            raise GroveError("interrupted (Ctrl-C or SIGTERM) while merging and validating; nothing was merged",
                             code=INTERRUPTED, hint="run the merge again") from None
        finally:
            if validator:
                validations += validator.count
                logs += validator.logs
                validator.release()
        fault(OP, "before", "publish")
        try:
            pushed, errors = _publish(settings, plan, local, remote, tip)
        except _Redo as redo:
            report.say(f"{redo}; redoing the queue on the new tip")
            continue
        fault(OP, "after", "publish")
        return {"base": plan.base, "strategy": plan.strategy, "mode": plan.mode, "dry_run": False,
                "base_before": before, "base_after": tip, "pushed": pushed, "attempts": attempt,
                "validations": validations, "validation_logs": logs, "errors": errors, "results": results}
    raise GroveError(f"the base moved or the push was rejected {settings.push_retries + 1} times; nothing was merged",
                     hint="others keep moving the base: retry later or raise ADW_PUSH_RETRIES")


# -- publishing: one consistent step (issue 10, defect 7) -------------------------------------


def _publish(settings: Settings, plan: Plan, local: str, remote: str | None, tip: str) -> tuple[bool, list[str]]:
    """Make ``tip`` the base: (pushed, errors).

    Raises _Redo or GroveError only while nothing is published yet; never after a push.
    """
    base = plan.base
    with worktree.repo_lock(settings):
        now = git.rev(settings.repo, f"refs/heads/{base}")
    if now != local:
        raise _Redo(f"the local {base} moved during the merge ({_short(local)} -> {_short(now)})")
    if tip == local and (not plan.push or tip == remote):
        return False, []
    _refuse_dirty_checkout(settings, base)
    pushed = False
    if plan.push and tip != remote:
        # The lease makes the push a compare-and-swap on the remote: it lands only over the tip we
        # built on, so nothing another machine pushed meanwhile can be overwritten.
        lease = f"--force-with-lease=refs/heads/{base}:{remote or ''}"
        out = proc.run(["git", "-C", settings.repo, "push", "--porcelain", "--quiet", lease, settings.remote,
                        f"{tip}:refs/heads/{base}"], check=False, timeout=settings.git_timeout)
        if out.returncode != 0:
            said = out.stdout + out.stderr
            if "rejected" in said or "stale info" in said:
                raise _Redo(f"push rejected ({proc.tail(said, 1)})")
            raise GroveError(f"push to {settings.remote} failed: {proc.tail(out.stderr)}; "
                             f"nothing was merged ({base} is unchanged here and there)")
        pushed = True
    fault(OP, "after", "push")
    if tip == local:
        return pushed, []
    moved, detail = _move_local(settings, base, local, tip, pushed)
    if moved:
        return pushed, []
    if not pushed:  # nothing is published: the local base moved under us, or its checkout refused
        if _rev(settings, base) != local:
            raise _Redo(detail)
        raise GroveError(f"{detail}; nothing was merged", hint="make that checkout clean, then merge again")
    return pushed, [f"{settings.remote}/{base} has the merge ({_short(tip)}), but the local {base} was left at "
                    f"{_short(_rev(settings, base))}: {detail}; run `git pull --rebase` on {base} to reconcile"]


def _move_local(settings: Settings, base: str, old: str, new: str, pushed: bool) -> tuple[bool, str]:
    """Compare-and-swap the local base from ``old`` to ``new``: (done, why not).

    The base's checkout is looked up at this moment, under the repo lock, not once before merging:
    a checkout the user made during the run is fast-forwarded along instead of going stale.
    Once ``new`` is pushed, a local base that moved to one of its ancestors is still brought to it
    (the remote has it all); before that, any move means the queue is redone.
    """
    for _ in range(5):
        with worktree.repo_lock(settings):
            current = _rev(settings, base)
            if current == new or (current and git.ok(settings.repo, "merge-base", "--is-ancestor", new, current)):
                return True, ""  # it already holds the merge (someone pulled it)
            if current != old:
                if pushed and current and git.ok(settings.repo, "merge-base", "--is-ancestor", current, new):
                    old = current  # e.g. a `git pull` of part of it: moving on loses nothing
                    continue
                return False, f"{base} moved during the merge to {_short(current)}, which has commits not in it"
            checkout = _checkout_of_base(settings, base)
            if checkout is None:
                out = proc.run(["git", "-C", settings.repo, "update-ref", "-m", "grove merge", f"refs/heads/{base}",
                                new, old], check=False)
                if out.returncode == 0:
                    return True, ""
                continue  # it moved between the read and the swap: look again
            if _dirty(checkout):
                return False, f"{checkout} has {base} checked out with uncommitted changes"
            clobbered = git.ignored_in_the_way(checkout, old, new)
            if clobbered:
                return False, (f"bringing {checkout} along would overwrite ignored files git does not protect: "
                               f"{', '.join(clobbered[:5])}")
            # Through a private index with the intent recorded first, so a kill midway leaves
            # nothing half-done that a re-run cannot finish (safety/checkout.py, issue 20 item 4).
            moved, why = ffwd.fast_forward(checkout, base, old, new, timeout=settings.git_timeout)
            if moved:
                return True, ""
            if _rev(settings, base) == old:
                return False, why
    return False, f"{base} kept moving during the merge"


def _rev(settings: Settings, base: str) -> str | None:
    return git.rev(settings.repo, f"refs/heads/{base}")


def _short(sha: str | None) -> str:
    return (sha or "nothing")[:10]


# -- building the merged tip in the integration worktree -------------------------------------


@dataclass
class _Built:
    state: dict
    result: dict
    tip: str  # the tip after this entry (unchanged when it was not merged)
    candidate: bool  # merged with new commits: counts in a batch's validation


def _build(settings: Settings, plan: Plan, wt: Path, entries: list[dict], tip: str, report: Reporter,
           validator: "Validator | None") -> tuple[str, list[dict]]:
    """Sequential mode: merge and validate each branch in turn."""
    tip, built = _merge_run(settings, plan, wt, entries, tip, report, validator)
    return tip, [b.result for b in built]


def _merge_run(settings: Settings, plan: Plan, wt: Path, entries: list[dict], tip: str, report: Reporter,
               validator: "Validator | None" = None) -> tuple[str, list[_Built]]:
    """Merge ``entries`` in order onto ``tip``; with a validator, validate each merged result."""
    built = []
    for s in entries:
        began = time.monotonic()
        commits = _new_commits(settings, s, tip)
        if not commits:
            built.append(_Built(s, _result(s, "merged", reason="already in the base"), tip, False))
            continue
        fault(OP, "before", s["adw_id"])
        outcome, new_tip, extra = _merge_one(settings, plan, wt, s, tip)
        if outcome == "merged" and validator is not None:
            check = validator.check(new_tip, [s])
            if not check.ok:
                validator.require_good_base(tip)
                outcome, new_tip, extra = "validation_failed", tip, check.as_result()
        extra.update(commits=commits, seconds=round(time.monotonic() - began, 3))
        result = _result(s, outcome, **extra)
        if outcome == "merged":
            tip = new_tip  # HEAD is already there
        else:  # an aborted rebase or a failed validation leaves HEAD elsewhere
            integration.goto(wt, tip)
        if not plan.batch or outcome != "merged":
            _say(report, result)
        built.append(_Built(s, result, tip, outcome == "merged"))
    return tip, built


def _say(report: Reporter, r: dict) -> None:
    """Progress on stderr, one word per branch: the result line itself goes to stdout once, in the
    summary (issue 21: each result line was printed on both streams)."""
    report.say(f"{'✓' if r['outcome'] == 'merged' else '✗'} {r['adw_id']}: {r['outcome']}")


def _build_batch(settings: Settings, plan: Plan, wt: Path, start: str, report: Reporter,
                 validator: "Validator | None") -> tuple[str, list[dict]]:
    """Batch mode: merge everything, validate once; on failure bisect, drop the culprit, go on.

    The prefixes' tips already exist (each merge is a commit on the last), so testing a prefix is
    a checkout, not a re-merge. The prefix of length 0 is the base, taken as good. After a culprit
    is dropped, everything queued after it is merged again on the last good prefix, conflicts
    included: they may have conflicted only with the culprit, as in sequential mode.
    """
    done: list[dict] = []
    entries, base = list(plan.queue), start
    while True:
        tip, built = _merge_run(settings, plan, wt, entries, base, report)
        candidates = [b for b in built if b.candidate]
        if validator is None or not candidates:
            return tip, done + [b.result for b in built]
        report.say(f"validating {len(candidates)} merged branch(es) at once")
        failing = validator.check(tip, [b.state for b in candidates])
        if failing.ok:
            return tip, done + [b.result for b in built]
        good, bad = 0, len(candidates)  # prefix lengths: `good` passes (0 = the base), `bad` fails
        while bad - good > 1:
            mid = (good + bad) // 2
            fault(OP, "before", "bisect")
            check = validator.check(candidates[mid - 1].tip, [b.state for b in candidates[:mid]])
            if check.ok:
                good = mid
            else:
                bad, failing = mid, check
        if bad == 1:
            validator.require_good_base(base)
        culprit = candidates[bad - 1]
        at = built.index(culprit)
        culprit.result.pop("merged_commit", None)
        culprit.result.update(outcome="validation_failed", **failing.as_result())
        _say(report, culprit.result)
        done += [b.result for b in built[:at + 1]]
        base = built[at - 1].tip if at else base
        entries = [b.state for b in built[at + 1:]]
        integration.goto(wt, base)


def _new_commits(settings: Settings, s: dict, tip: str) -> list[str]:
    """The branch's commits not yet in ``tip``; [] when its changes are already there
    (by ancestry, patch-id or tree: squash- and rebase-merged branches count)."""
    branch = f"refs/heads/{s['branch']}"
    commits = git.commits_between(settings.repo, tip, branch)
    return commits if commits and not git.is_merged(settings.repo, branch, tip) else []


def _merge_one(settings: Settings, plan: Plan, wt: Path, s: dict, tip: str) -> tuple[str, str, dict]:
    """Merge one branch onto ``tip`` (HEAD): (outcome, new tip, result fields). No validation here."""
    branch = f"refs/heads/{s['branch']}"
    message = f"Merge {s['branch']} (adw {s['adw_id']})"
    if plan.strategy == "rebase":
        integration.run_git(wt, "checkout", "--quiet", "--detach", "--force", branch)
        # A user's rebase.updateRefs=true would move their own branches that point into the range.
        attempt = proc.run(["git", *integration.NO_RECURSE, "-c", "rebase.updateRefs=false", "-C", wt, "rebase",
                            "--quiet", tip], check=False)
        abort: tuple[str, ...] = ("rebase", "--abort")
    else:
        flags = ["--no-ff", "--no-edit", "-m", message] if plan.strategy == "no-ff" else ["--squash"]
        attempt = proc.run(["git", *integration.NO_RECURSE, "-C", wt, "merge", "--quiet", *flags, branch], check=False)
        abort = ("merge", "--abort") if plan.strategy == "no-ff" else ("reset", "--hard", "--quiet", tip)
    if attempt.returncode != 0:
        files = sorted(set(filter(None, git.git(wt, "diff", "--name-only", "--diff-filter=U").split("\n"))))
        proc.run(["git", *integration.NO_RECURSE, "-C", wt, *abort], check=False)
        if not files:
            raise GroveError(f"git could not merge {s['branch']}: {proc.tail(attempt.stderr or attempt.stdout)}")
        return "conflict", tip, {"conflict_files": files, "reason": f"conflict in {', '.join(files)}"}
    if plan.strategy == "squash":
        git.git(wt, "commit", "--quiet", "--no-verify", "-m", f"{s['branch']} (adw {s['adw_id']}), squashed")
    new_tip = git.git(wt, "rev-parse", "HEAD")
    leaks = _generated_files(settings, tip, new_tip, s)
    if leaks:
        return "validation_failed", tip, {"reason": f"would commit Grove-generated files: {', '.join(leaks)}"}
    return "merged", new_tip, {"merged_commit": new_tip}


def _generated_files(settings: Settings, old: str, new: str, s: dict) -> list[str]:
    """Files from the setup chain that must never enter a merge: .ports.env, and worktree paths."""
    changed = set(filter(None, git.git(settings.repo, "diff", "--name-only", old, new).split("\n")))
    leaks = sorted(p for p in changed if Path(p).name == ".ports.env")
    for name in settings.path_configs:
        if name in changed and s["worktree_path"] in git.git(settings.repo, "show", f"{new}:{name}", check=False):
            leaks.append(f"{name} (holds {s['worktree_path']})")
    return leaks


# -- validation in the prepared integration worktree ------------------------------------------


@dataclass
class Check:
    ok: bool
    exit_code: int | None
    output_tail: str
    reason: str | None

    def as_result(self) -> dict:
        out: dict = {"reason": self.reason, "output_tail": self.output_tail}
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        return out


class Validator:
    """Runs the validate command on a merged tip in the prepared integration worktree.

    ``count`` is how many times it ran; a tip already validated in this run is not run again.
    The worktree is prepared (port slot, env, installs) on the first validation, not before.
    """

    def __init__(self, settings: Settings, plan: Plan, wt: Path, report: Reporter):
        self.settings, self.plan, self.wt, self.report = settings, plan, wt, report
        self.count = 0
        self.logs: list[dict] = []
        self.seen: dict[str, Check] = {}
        self.prepared: integration.Prepared | None = None

    def require_good_base(self, base: str) -> None:
        """Before blaming the first branch on top of ``base``, make sure the base itself passes.

        A suite that fails on the base (a service it needs is down, a broken command) would otherwise
        mark every branch failed; instead the run stops with nothing merged. Costs one run, and only
        when the first branch on an unverified base fails.
        """
        check = self.check(base, [])
        if not check.ok:
            raise GroveError(f"the validation fails on {self.plan.base} itself ({_short(base)}): {check.reason}; "
                             "nothing was merged", hint="fix the base or the validate command, then merge again")

    def check(self, tip: str, agents: list[dict]) -> Check:
        if tip in self.seen:
            return self.seen[tip]
        self.count += 1
        integration.run_git(self.wt, "checkout", "--quiet", "--detach", "--force", tip)
        try:
            result = self._prepare_and_run(tip, agents)
        finally:
            integration.clean(self.wt)  # repointed tracked files and the command's leftovers go
        self.seen[tip] = result
        return result

    def _prepare_and_run(self, tip: str, agents: list[dict]) -> Check:
        if self.prepared is None:
            try:
                self.prepared = integration.Prepared(self.settings, self.wt)
            except GroveError as exc:  # no free slot: nothing to do with any branch, so the run stops
                exc.message = f"the merge queue's integration worktree needs a port slot: {exc.message}; " \
                              "nothing was merged"
                raise
        try:
            self.prepared.before_validation()
        except GroveError as exc:  # the chain failed on this tree (no free slot, an install, the db reset ...)
            return Check(False, None, exc.message, f"preparing the integration worktree failed: {exc.message}")
        env = self.prepared.env({"ADW_ID": " ".join(a["adw_id"] for a in agents),
                                 "ADW_BRANCH": " ".join(a["branch"] for a in agents),
                                 "ADW_BASE_BRANCH": self.plan.base})
        # The user's own command, given as a shell command (their config), in its own session.
        code, output = proc.run_tree(["bash", "-c", self.plan.validate], cwd=self.wt, env=env,
                                     timeout=self.settings.install_timeout)
        output = agentdb.scrub(self.settings, output)  # a test suite may print DATABASE_URL
        self._keep_log(tip, agents, code, output)
        if code == 0:
            return Check(True, 0, "", None)
        tail = "\n".join(line.rstrip() for line in output.rstrip().splitlines()[-OUTPUT_TAIL_LINES:])
        if code is None:
            return Check(False, None, tail, f"validation timed out after {self.settings.install_timeout:.0f}s "
                                            f"(ADW_INSTALL_TIMEOUT): {proc.tail(output, 3)}")
        return Check(False, code, tail, f"validation exited {code}: {proc.tail(output, 5)}")

    def _keep_log(self, tip: str, agents: list[dict], code: int | None, output: str) -> None:
        """The whole output, kept under agents/.grove/logs/ (private: it may hold secrets), its path in
        the summary: a passing validation's output was neither shown nor kept (issue 21)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.settings.grove_path / "logs" / f"validate-{stamp}-{len(self.logs) + 1}-{tip[:10]}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        locks.atomic_write_text(path, f"$ {self.plan.validate}\n{output}", 0o600, durable=False)
        self.logs.append({"tip": tip, "adw_ids": [a["adw_id"] for a in agents], "exit_code": code, "log": str(path)})

    def release(self) -> None:
        if self.prepared is None:
            return
        try:
            self.prepared.release()
        except GroveError:
            pass  # a claim left behind is found again by the next run (same id)


# -- after publishing: statuses and cleanup never raise ---------------------------------------

_TARGET = {"merged": "merged", "conflict": "conflict", "validation_failed": "failed"}


def _record(settings: Settings, summary: dict) -> None:
    """Statuses follow outcomes, after the base moved. Never raises: whatever cannot be recorded is
    said in ``errors``; an agent whose status changed meanwhile keeps it and gets the result in its history."""
    for r in summary["results"]:
        target = _TARGET.get(r["outcome"])
        if target is None:
            continue
        fields = {"merged": {"merged_commit": r.get("merged_commit"), "conflict_files": []},
                  "conflict": {"conflict_files": r["conflict_files"]}, "failed": {}}[target]
        if target == "merged" and _committed_meanwhile(settings, summary, r):
            continue
        try:
            r["status"] = state.set_status(settings, r["adw_id"], target, by="grove merge",
                                           error=r["reason"] if target != "merged" else None, **fields)["status"]
            continue
        except Exception as exc:  # noqa: BLE001 - the merge stands whatever happens to one state
            if not (isinstance(exc, GroveError) and exc.code == BAD_INPUT and _has_state(settings, r["adw_id"])):
                _unrecorded(summary, r, exc)
                continue
        try:  # a refused transition: its status changed during the merge
            r["status"] = state.update(settings, r["adw_id"], lambda s: _note(s, r))["status"]
            summary["errors"].append(f"{r['adw_id']}: {r['outcome']}, but its status changed to {r['status']} "
                                     f"during the merge; left as is, with the result in its history")
        except Exception as exc:  # noqa: BLE001
            _unrecorded(summary, r, exc)


def _committed_meanwhile(settings: Settings, summary: dict, r: dict) -> bool:
    """The agent committed after its branch was merged (during validation, the push or the cleanup):
    it is not `merged`, and --cleanup must not take it (issue 20, item 14b). Its status stays, the
    result goes into its history, and the next merge takes the new commits. set_status checks the
    same facts again under the state lock."""
    try:
        s = state.load(settings, r["adw_id"])
        if s is None or state.branch_in_base(settings, s) is not False:
            return False
        r["status"] = state.update(settings, r["adw_id"], lambda st: _note(st, r))["status"]
    except GroveError:
        return False  # set_status will say what is wrong
    summary["errors"].append(f"{r['adw_id']}: merged, but branch {r['branch']} has commits that are not in the base "
                             f"(made during the merge); status left {r['status']}, so merge it again")
    return True


def _has_state(settings: Settings, adw_id: str) -> bool:
    try:
        return state.load(settings, adw_id) is not None
    except GroveError:
        return False


def _note(s: dict, r: dict) -> None:
    entry = {"status": s["status"], "at": state.now(), "by": "grove merge", "merge": r["outcome"]}
    for key in ("merged_commit", "reason"):
        if r.get(key):
            entry[key] = r[key]
    s.setdefault("history", []).append(entry)
    del s["history"][:-state.HISTORY_LIMIT]


def _unrecorded(summary: dict, r: dict, exc: Exception) -> None:
    r["status"] = None
    summary["errors"].append(f"{r['adw_id']}: {r['outcome']}, but its state could not be updated: "
                             f"{getattr(exc, 'message', None) or exc}")


def _cleanup(settings: Settings, summary: dict, report: Reporter) -> None:
    """--cleanup: tear down each agent now marked merged; a failure stays with its result."""
    from .cleanup import teardown

    for r in summary["results"]:
        if r["outcome"] != "merged" or r.get("status") != "merged":
            continue
        try:
            r["cleanup"] = teardown(settings, r["adw_id"], delete_branch=True, salvage=True, report=report)
        except (GroveError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            r["cleanup"] = {"adw_id": r["adw_id"], "error": message, "hint": getattr(exc, "hint", None),
                            "exit_code": getattr(exc, "code", 1)}
            summary["errors"].append(f"{r['adw_id']}: merged, but cleanup failed: {message}")


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
    return {"base": plan.base, "strategy": plan.strategy, "mode": plan.mode, "dry_run": True, "base_before": before,
            "base_after": before, "pushed": False, "attempts": 0, "validations": 0, "validation_logs": [], "errors": [],
            "results": plan.skipped + results}


def failed(summary: dict) -> bool:
    """Exit 1 unless every requested branch merged and nothing needs attention."""
    return bool(summary["errors"]) or any(r["outcome"] != "merged" for r in summary["results"])


def print_summary(summary: dict) -> None:
    verb = "would merge" if summary["dry_run"] else "merged"
    for r in summary["results"]:
        print(f"{r['adw_id']:<12} {r['outcome']:<18} {r['branch']:<40} {r['reason'] or ''}")
    merged = sum(r["outcome"] == "merged" for r in summary["results"])
    moved = f"{(summary['base_before'] or '')[:10]} -> {(summary['base_after'] or '')[:10]}"
    runs = f", {summary['validations']} validation run(s)" if summary["validations"] else ""
    print(f"{verb} {merged}/{len(summary['results'])} into {summary['base']} ({moved}, {summary['mode']}{runs})"
          + (", pushed" if summary["pushed"] else ""))
    for error in summary["errors"]:
        print(f"error: {error}")
