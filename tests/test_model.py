"""The safety invariants, checked by a model-based test (issue 10): random operations and crashes on
real repositories with a bare origin, then "nothing is lost".

Rules: setup (from the warm pool when it has an entry); an agent commits on its branch or on a
detached HEAD; an uncommitted edit (tracked file or new file); status changes; teardown with random
--force/--delete-branch; merge with and without --cleanup, sequential or --batch; sync (merge or
rebase); filling and draining the pool; gc, doctor --fix and teardown --all; a kill -9 of a running
setup, pooled take, sync, teardown or merge, at one of its crash points or at a random moment.

Invariants, after every step:
- every commit an agent made is reachable from a ref (after `doctor --fix` when git needs it);
- every uncommitted edit is still in its worktree, or in a salvage ref, or in a moved-aside directory;
- refs Grove did not create (the user's branches and tags) are byte-identical, and the base only
  ever moves forward;
and at the end of each run: after `doctor --fix` and re-running interrupted setups, `inv doctor` is
healthy and `git rev-list --all` works.

A seeded random driver: each run picks operations uniformly at random from a seed, so every
failure names its seed and prints the exact sequence of steps; `GROVE_FUZZ_SEED=N` replays it.
`make test` runs the regression seeds plus a few fresh seeds each time; `make fuzz SEED=N RUNS=M`
runs long. (Hypothesis's stateful generator was tried first: it tends to repeat one rule many times
in a row, and missed a disabled salvage in 40 runs; the uniform driver finds that in its first few.)
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import cli, git, make_repo

from grove.ops import chain, cleanup, doctor
from grove.core import config, state
from grove import worktree_manager as wm
from grove.core.errors import GroveError
from grove.core.report import Reporter

IDS = ("a", "b", "c", "d")  # `d` collides with a user's own branch adw/d: Grove must refuse it
USER_REFS = ("refs/heads/feature/auth/login-form", "refs/heads/adw/legacy-thing", "refs/heads/adw/d",
             "refs/tags/v1.0")
CRASH_POINTS = (
    [f"setup:{w}:{s}" for s in ("fetch", "ports", "worktree", "ports_env", "env", "install", "db")
     for w in ("before", "after")]
    + [f"teardown:{w}" for w in ("before:worktree", "after:worktree", "after:branch", "after:ports", "after:state")]
    + ["merge:before:publish", "merge:after:publish"]
    + ["pool:after:claim", "pool:after:move", "pool:after:branch", "sync:before:merge"]
)
STEPS = int(os.environ.get("GROVE_FUZZ_STEPS") or 30)
# Seeds that once found a defect stay here as regressions (see the closing notes of issue 10).
# (Issue 25 changed the operation mix, so this seed no longer replays the sequence that found it.)
REGRESSION_SEEDS: list[tuple[int, int]] = [  # (seed, steps it needs)
    (2054376180, 32),  # sync --strategy rebase left the agent's original commits unreachable (session 3)
    (847752462, 30),  # a re-run finished a half-taken pooled worktree over commits made on its detached HEAD
]
# Seeds known to reach each mechanism (issue 25; found by a search over seeds 1-170, STEPS=30). Each
# run asserts it still reaches what it is listed for, so a change of the driver that makes one miss
# its mechanism fails here instead of quietly testing less. Only what the seed decides is listed: a
# kill at a random moment lands or not depending on the machine's speed, and so may what follows one:
# seed 55 reached a crash inside sync in 2 runs of 4, so no seed is listed for it. Each was run 3 times
# with the same outcome. (seed, what it must reach)
MECHANISM_SEEDS: list[tuple[int, frozenset[str]]] = [
    (43, frozenset({"crash pool", "crash setup", "crash teardown", "merge", "pooled take"})),
    (12, frozenset({"merge --cleanup", "sync rebased"})),
    (46, frozenset({"crash merge", "merge", "pooled take", "sync rebased"})),
    (17, frozenset({"merge", "sync merged"})),
]
_ports = itertools.count(31000, 40)
_MODEL_ENV = ("ADW_BACKEND_PORT_BASE", "ADW_FRONTEND_PORT_BASE", "ADW_PORT_SLOTS")
_serial = itertools.count()


class NothingIsLost:
    """The model: what agents made, and the operations; each method is one step."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="grove-model-"))
        self.repo = make_repo(self.root)
        base = next(_ports)
        # Put back in close(): the 3 slots below leaked into every later test of the session.
        self._saved_env = {k: os.environ.get(k) for k in _MODEL_ENV}
        os.environ["ADW_BACKEND_PORT_BASE"], os.environ["ADW_FRONTEND_PORT_BASE"] = str(base), str(base + 20)
        # Three slots for three usable ids (d is refused): preferred slots collide, so claims must
        # see each other for every agent to get ports of its own (issue 25: port bugs went unseen).
        os.environ["ADW_PORT_SLOTS"] = "3"
        self.settings = config.load({"repo": self.repo})
        self.commits: set[str] = set()
        self.edits: dict[tuple[str, str], str] = {}  # (adw_id, path) -> content not yet committed
        self.report = Reporter(quiet=True)
        # What this run really did (issue 25): a model that stops doing agent work still "passes".
        self.done = {"commits": 0, "tracked_edits": 0, "new_files": 0, "ignored_files": 0, "removals": 0, "kills": 0}
        self.ignored: dict[tuple[str, str], str] = {}  # (adw_id, path) -> an ignored file the agent wrote
        self.calls: dict[str, list[int]] = {}  # operation -> [runs, refusals or failures]
        self.reached: set[str] = set()  # the mechanisms this run got into (MECHANISM_SEEDS)
        self.errors: dict[str, str] = {}  # operation -> its last refusal, for the messages

    def users_own_refs(self):
        tip = git(self.repo, "rev-parse", "HEAD")
        for ref in USER_REFS:
            git(self.repo, "update-ref", ref, tip)
        self.user_refs = self._refs(USER_REFS)
        self.base = tip

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # -- helpers ---------------------------------------------------------------------------------

    def _refs(self, names) -> dict:
        out = git(self.repo, "for-each-ref", "--format=%(refname) %(objectname)")
        return {ref: sha for ref, sha in (line.split() for line in out.splitlines()) if ref in names}

    def _tree(self, adw_id) -> Path:
        return self.repo / "trees" / adw_id

    def _live(self, adw_id) -> bool:
        return (self._tree(adw_id) / ".git").exists() and (self._tree(adw_id) / "README.md").exists()

    def _quiet(self, op, action, expected=(GroveError,)):
        """Run one operation; Grove's refusals and failures are fine (losing something is not), but
        only those: anything else is a bug (issue 25). ``expected`` widens it for the seed's API,
        which turns GroveError into ValueError/RuntimeError. Counted, so an operation that fails
        every time it runs is noticed at the end (``check_operations``)."""
        tally = self.calls.setdefault(op, [0, 0])
        tally[0] += 1
        try:
            return action()
        except expected as exc:
            tally[1] += 1
            self.errors[op] = str(exc)
            return None

    def _removed(self, before: set[str]) -> None:
        self.done["removals"] += len(before - {a for a in IDS if self._live(a)})

    def _alive_ids(self) -> set[str]:
        return {a for a in IDS if self._live(a)}

    def _cli(self, *args, env=None, kill_after=None):
        proc = subprocess.Popen([*cli(), *args], cwd=self.repo, env=dict(os.environ, **(env or {})),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: git children die too
        code = proc.wait(timeout=120)
        self.done["kills"] += code == -signal.SIGKILL
        return code

    def converge(self):
        """doctor --fix, re-run interrupted setups, then doctor must be healthy and git must work."""
        doctor.check(self.settings, fix=True)
        for adw_id in state.all_ids(self.settings):
            s = state.load(self.settings, adw_id)
            if s and s["status"] == "created":
                self._quiet("converge", lambda: chain.setup(self.settings, chain.Request(adw_id, install=False),
                                                            self.report))
        report = doctor.check(self.settings, fix=True)
        assert report["healthy"], json.dumps(report["problems"], indent=1)
        git(self.repo, "rev-list", "--all")
        self.check_commits()
        self.check_edits()
        self.check_ignored()

    # -- operations ------------------------------------------------------------------------------

    def setup(self, adw_id):
        op = "setup of d" if adw_id == "d" else "setup"
        result = self._quiet(op, lambda: chain.setup(self.settings, chain.Request(adw_id, install=False), self.report))
        if result and result.get("from_pool"):
            self.reached.add("pooled take")
        if adw_id == "d":
            assert result is None, "setup must refuse a branch the user owns"

    def setup_many(self, ids):
        """Several agents in one call: the pipeline of issue 12 (heads in turn, tails in threads)."""
        reqs = [chain.Request(i, install=False) for i in ids]
        result = self._quiet("setup_many", lambda: chain.setup_many(self.settings, reqs, self.report))
        if result is not None and "d" in ids:
            assert "d" in [e["adw_id"] for e in result[1]], "setup must refuse a branch the user owns"

    def commit(self, adw_id, detached, count=1):
        """The agent commits ``count`` times (on its branch, or on a detached HEAD)."""
        wt = self._tree(adw_id)
        if not self._live(adw_id):
            return
        if detached and not self._agent_git(wt, "checkout", "-q", "--detach"):
            return
        for _ in range(count):
            name = f"work-{next(_serial)}.txt"
            (wt / name).write_text(f"{adw_id} committed {name}\n")
            # The agent's own git may refuse after a kill (an index.lock a killed git left): then it
            # made no commit, and this is not Grove's failure (issue 25: a harness flake).
            if not (self._agent_git(wt, "add", "-A")
                    and self._agent_git(wt, "commit", "-q", "--allow-empty", "-m", f"{adw_id}: {name}")):
                return
            self.commits.add(git(wt, "rev-parse", "HEAD"))
            self.done["commits"] += 1
            for key in [k for k in self.edits if k[0] == adw_id]:
                del self.edits[key]  # committed with `add -A`: the commit invariant covers them now

    @staticmethod
    def _agent_git(wt: Path, *args: str) -> bool:
        return subprocess.run(["git", "-C", str(wt), *args], capture_output=True).returncode == 0

    def edit(self, adw_id, tracked):
        if not self._live(adw_id):
            return
        path = "README.md" if tracked else f"notes/new-{next(_serial)}.txt"
        content = f"uncommitted {next(_serial)} by {adw_id}\n"
        (self._tree(adw_id) / path).parent.mkdir(parents=True, exist_ok=True)
        (self._tree(adw_id) / path).write_text(content)
        self.edits[(adw_id, path)] = content
        self.done["tracked_edits" if tracked else "new_files"] += 1
        if not tracked:  # and what git does not see (issue 20): an ignored file beside it (`*.db`)
            ignored = path[:-len(".txt")] + ".db"
            (self._tree(adw_id) / ignored).write_text(f"rows of {adw_id}: {content}")
            self.ignored[(adw_id, ignored)] = f"rows of {adw_id}: {content}"
            self.done["ignored_files"] += 1

    def status(self, adw_id, new_status):
        self._quiet("status", lambda: state.set_status(self.settings, adw_id, new_status, by="model"))

    def teardown_one(self, adw_id, force, delete_branch):
        before = self._alive_ids()
        self._quiet("teardown", lambda: cleanup.teardown(self.settings, adw_id, delete_branch=delete_branch,
                                                         force=force))
        self._removed(before)

    def merge(self, ids, with_cleanup, batch=False):
        # One unknown id refuses the whole call (bad input): merge the drawn ids Grove knows, so
        # merges land instead of being refused most of the time (issue 25: merge bugs went unseen).
        ids = [i for i in ids if (self.repo / "agents" / i / "adw_state.json").exists()] or ids
        before = self._alive_ids()
        summary = self._quiet("merge", lambda: wm.merge_worktrees(ids, cleanup=with_cleanup, batch=batch,
                                                                  project_root=self.repo),
                              expected=(ValueError, RuntimeError))
        if summary and any(r.outcome == "merged" for r in summary.results):
            self.reached.add("merge" + " --batch" * batch + " --cleanup" * with_cleanup)
        if summary is not None:
            self.check_merge_report(summary)
        self._removed(before)

    def sync(self, adw_id, rebase):
        result = self._quiet("sync", lambda: wm.sync_worktree(adw_id, strategy="rebase" if rebase else "merge",
                                                              project_root=self.repo), expected=(ValueError, RuntimeError))
        if result and result.outcome in ("merged", "rebased"):
            self.reached.add(f"sync {result.outcome}")

    def pool(self, size):
        """Fill (or drain) the warm pool; the next setups take from it."""
        from grove.ops import pool as pooling

        self._quiet("pool", lambda: pooling.fill(self.settings, size, None, self.report, fetch=False))

    def bulk(self, op):
        before = self._alive_ids()
        if op == "gc":
            self._quiet("gc", lambda: cleanup.gc(self.settings, max_age_days=0))
        elif op == "doctor":
            self._quiet("doctor", lambda: doctor.check(self.settings, fix=True))
        else:
            self._quiet("teardown_all", lambda: cleanup.teardown_all(self.settings))
        self._removed(before)

    def _pool_ready(self) -> bool:
        registry = self.repo / "agents/.grove/pool.json"
        return registry.exists() and any(e.get("status") == "ready"
                                         for e in json.loads(registry.read_text())["entries"].values())

    def essential(self, what, flip=False):
        """Work every run does at least once (issue 25), on a live agent (set up first if need be):
        a commit, a tracked edit, a new file, a merge, a forced removal, a kill -9 inside an operation."""
        live = sorted(self._alive_ids())
        if what == "kill":
            idle = [a for a in IDS[:3] if a not in live and not (self.repo / "agents" / a).exists()]
            if idle:
                return self.crash_at_a_point(idle[0], "setup:after:worktree")
            return self.crash_at_a_point(live[0] if live else "a", "teardown:before:worktree")
        if not live:
            self.setup("a")
            live = sorted(self._alive_ids())
            if not live:
                return
        adw_id = live[0]
        if what == "commit":
            self.commit(adw_id, detached=False, count=2)
        elif what == "merge":  # finished work merged back: the base moves, syncs have something to bring
            self.commit(adw_id, detached=False)
            self.status(adw_id, "completed")
            self.merge([adw_id], with_cleanup=flip, batch=False)
        elif what in ("tracked_edit", "new_file"):
            self.edit(adw_id, tracked=what == "tracked_edit")
        else:
            self.edit(adw_id, tracked=False)  # something to salvage
            self.teardown_one(adw_id, force=True, delete_branch=False)

    def crash_at_a_point(self, adw_id, point):
        op = point.split(":")[0]
        if op == "pool" and not self._pool_ready():
            self.pool(1)  # a crash inside a pooled take needs an entry to take (issue 25: never reached)
        args = {"setup": ["setup", "--adw-id", adw_id, "--no-install"],
                "pool": ["setup", "--adw-id", adw_id, "--no-install"],  # takes a pooled worktree if any
                "teardown": ["teardown", "--adw-id", adw_id, "--force", "--delete-branch"],
                "merge": ["merge", "--adw-id", adw_id, "--cleanup"],
                "sync": ["sync", "--adw-id", adw_id]}[op]
        if self._cli(*args, env={"GROVE_FAULT": point}) == -signal.SIGKILL:
            self.reached.add(f"crash {point.split(':')[0]}")

    def kill_at_a_random_moment(self, adw_id, op, delay):
        others = [a for i in IDS if i != adw_id for a in ("--adw-id", i)][:4]
        args = {"setup": ["setup", "--adw-id", adw_id, "--no-install"],
                "setup_many": ["setup", "--adw-id", adw_id, *others, "--no-install"],
                "teardown": ["teardown", "--adw-id", adw_id, "--force"],
                "merge": ["merge", "--adw-id", adw_id]}[op]
        if self._cli(*args, kill_after=delay) == -signal.SIGKILL:
            self.reached.add(f"kill {op}")

    # -- invariants ------------------------------------------------------------------------------

    def check_commits(self):
        if not self.commits:
            return
        out = subprocess.run(["git", "-C", str(self.repo), "rev-list", "--all"], capture_output=True, text=True)
        if out.returncode != 0:  # e.g. a worktree add killed midway: doctor --fix must make git work again
            doctor.check(self.settings, fix=True)
            out = subprocess.run(["git", "-C", str(self.repo), "rev-list", "--all"], capture_output=True, text=True)
            assert out.returncode == 0, f"git rev-list --all still fails after doctor --fix: {out.stderr}"
        lost = self.commits - set(out.stdout.split())
        assert not lost, f"commits no ref reaches: {sorted(lost)}"

    def check_edits(self):
        salvages = git(self.repo, "for-each-ref", "--format=%(refname)", "refs/grove-salvage/").split()
        for (adw_id, path), content in self.edits.items():
            here = self._tree(adw_id) / path
            if here.is_file() and here.read_text() == content:
                continue
            if any(_show(self.repo, f"{ref}:{path}") == content for ref in salvages if f"/{adw_id}/" in ref):
                continue
            moved = (self.repo / "agents/.archive").glob(f"{adw_id}-dir-*/{path}")
            assert any(p.read_text() == content for p in moved), f"uncommitted edit lost: {adw_id}:{path}"

    def check_ignored(self):
        """Every ignored file an agent wrote is in its worktree or in its archive (issue 20): the
        archive of ignored files (agents/.archive/<id>/<utc>/files/) or a directory moved aside."""
        archive = self.repo / "agents/.archive"
        for (adw_id, path), content in self.ignored.items():
            here = self._tree(adw_id) / path
            if here.is_file() and here.read_text() == content:
                continue
            kept = [*archive.glob(f"{adw_id}/*/files/{path}"), *archive.glob(f"{adw_id}-dir-*/{path}")]
            assert any(p.read_text() == content for p in kept), f"ignored file lost: {adw_id}:{path}"

    def check_merge_report(self, summary):
        """What a merge says is what happened (issue 25): with no errors the local base is at
        base_after, and every branch it says merged is in the base."""
        main = git(self.repo, "rev-parse", "refs/heads/main")
        if not summary.errors:
            assert main == summary.base_after, f"merge said main is at {summary.base_after}, it is at {main}"
        for r in summary.results:
            if r.outcome == "merged" and r.merged_commit:  # none when it was "already in the base"
                assert _ancestor(self.repo, r.merged_commit, main), f"{r.adw_id} said merged, not in main"

    def check_ports(self):
        """No two agents that have a worktree hold the same port."""
        held: dict[int, str] = {}
        for adw_id in state.all_ids(self.settings):
            s = state.load(self.settings, adw_id)
            if s and s.get("backend_port") and self._tree(adw_id).exists():
                assert s["backend_port"] not in held, f"{adw_id} and {held[s['backend_port']]} share a port"
                held[s["backend_port"]] = adw_id

    MINIMUM = {"commits": 2, "tracked_edits": 1, "new_files": 1, "ignored_files": 1, "removals": 1, "kills": 1}

    def check_exercised(self):
        """The run did the work the invariants are about (issue 25: a driver that silently stopped
        doing agent work passed 60 runs with salvage disabled)."""
        short = {k: v for k, v in self.done.items() if v < self.MINIMUM[k]}
        assert not short, f"this run exercised too little to prove anything: {self.done}"
        for op, (runs, failed) in self.calls.items():
            if op not in ("setup of d", "sync", "merge", "status") and runs >= 4:
                assert failed < runs, f"{op} failed every time it ran ({runs} times): {self.calls}; " \
                                      f"the last said: {self.errors[op]}"

    def check_user_refs(self):
        if not hasattr(self, "user_refs"):
            return
        assert self._refs(USER_REFS) == self.user_refs, "a ref Grove did not create changed"
        main = git(self.repo, "rev-parse", "refs/heads/main")
        assert subprocess.run(["git", "-C", str(self.repo), "merge-base", "--is-ancestor", self.base, main]).returncode == 0
        self.base = main


def _ancestor(repo: Path, commit: str | None, of: str) -> bool:
    return bool(commit) and subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", str(commit), of],
                                           capture_output=True).returncode == 0


def _show(repo: Path, spec: str) -> str | None:
    out = subprocess.run(["git", "-C", str(repo), "show", spec], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def random_step(rng: random.Random, model: NothingIsLost) -> tuple[str, tuple]:
    """One operation with its arguments, drawn uniformly (weighted towards agents doing work)."""
    adw_id = rng.choice(IDS)
    table = [
        (3, "setup", (adw_id,)),
        (1, "setup_many", (rng.sample(IDS, rng.randint(2, 3)),)),
        (4, "commit", (adw_id, rng.random() < 0.3, rng.randint(1, 3))),
        (4, "edit", (adw_id, rng.random() < 0.5)),
        # Half the status changes finish the agent's work, so merges have something to merge.
        (2, "status", (adw_id, rng.choice(state.STATUSES) if rng.random() < 0.5 else "completed")),
        (2, "teardown_one", (adw_id, rng.random() < 0.5, rng.random() < 0.5)),
        (1, "merge", (rng.sample(IDS, rng.randint(1, 3)), rng.random() < 0.5, rng.random() < 0.3)),
        (1, "sync", (adw_id, rng.random() < 0.3)),
        (1, "pool", (rng.choice([0, 1, 2]),)),
        (1, "bulk", (rng.choice(["gc", "doctor", "teardown_all"]),)),
        (1, "crash_at_a_point", (adw_id, rng.choice(CRASH_POINTS))),
        (1, "kill_at_a_random_moment", (adw_id, rng.choice(["setup", "setup_many", "teardown", "merge"]),
                                        round(rng.uniform(0.0, 0.6), 2))),
    ]
    _, name, args = rng.choices(table, weights=[w for w, _, _ in table])[0]
    return name, args


def run_sequence(seed: int, steps: int = STEPS) -> set[str]:
    """One seeded run; returns the mechanisms it reached (see ``NothingIsLost.reached``)."""
    rng = random.Random(seed)
    model = NothingIsLost()
    done: list[str] = []
    plan = [random_step(rng, model) for _ in range(steps)]
    for what in ESSENTIAL:  # at random places, so every run reaches each invariant (issue 25)
        plan.insert(rng.randrange(len(plan) + 1), ("essential", (what, rng.random() < 0.5)))
    try:
        model.users_own_refs()
        for name, args in plan:
            done.append(f"{name}{args}")
            getattr(model, name)(*args)
            model.check_commits()
            model.check_edits()
            model.check_ignored()
            model.check_user_refs()
            model.check_ports()
        done.append("converge()")
        model.converge()
        model.check_exercised()
        return model.reached
    except Exception as exc:  # an assertion, or the harness itself: either way, say how to replay it
        steps_text = "\n  ".join(done)
        raise AssertionError(f"invariant broken with seed {seed} (replay: GROVE_FUZZ_SEED={seed} "
                             f"GROVE_FUZZ_STEPS={steps}) after:\n"
                             f"  {steps_text}\n{type(exc).__name__}: {exc}") from None
    finally:
        model.close()


ESSENTIAL = ("commit", "tracked_edit", "new_file", "merge", "removal", "kill")


def _seeds() -> list[tuple[int, int]]:
    if os.environ.get("GROVE_FUZZ_SEED"):
        first = int(os.environ["GROVE_FUZZ_SEED"])
        return [(first + i, STEPS) for i in range(int(os.environ.get("GROVE_FUZZ_RUNS") or 1))]
    fresh = random.SystemRandom()
    runs = int(os.environ.get("GROVE_FUZZ_RUNS") or 3)
    return [(seed, max(steps, STEPS)) for seed, steps in REGRESSION_SEEDS] + \
        [(fresh.randrange(2**31), STEPS) for _ in range(runs)]


@pytest.mark.parametrize("seed,steps", _seeds())
def test_random_operations_and_crashes_lose_nothing(seed, steps):
    run_sequence(seed, steps)


@pytest.mark.skipif(bool(os.environ.get("GROVE_FUZZ_SEED")), reason="replaying one seed")
@pytest.mark.parametrize("seed,reaches", MECHANISM_SEEDS, ids=[str(s) for s, _ in MECHANISM_SEEDS])
def test_seeds_known_to_reach_each_mechanism_still_do_and_lose_nothing(seed, reaches):
    reached = run_sequence(seed, 30)
    assert reaches <= reached, f"seed {seed} no longer reaches {sorted(reaches - reached)}: pick another " \
                               f"(it reached {sorted(reached)})"


# -- the checker itself (issue 25): fed a state where something was lost, it must complain ---------


@pytest.fixture
def model():
    m = NothingIsLost()
    m.users_own_refs()
    yield m
    m.close()


def test_the_checker_complains_about_a_lost_commit(model):
    model.setup("a")
    model.commit("a", detached=False, count=2)
    model.check_commits()  # quiet while the commits are there
    git(model.repo, "worktree", "remove", "--force", str(model._tree("a")))
    git(model.repo, "branch", "-D", "adw/a")  # what a cleanup that lost them would leave
    with pytest.raises(AssertionError, match="commits no ref reaches"):
        model.check_commits()


@pytest.mark.parametrize("tracked", [True, False], ids=["tracked edit", "untracked file"])
def test_the_checker_complains_about_a_lost_edit(model, tracked):
    model.setup("a")
    model.edit("a", tracked=tracked)
    model.check_edits()
    (path,) = [p for a, p in model.edits if a == "a"]
    (model._tree("a") / path).write_text("overwritten\n") if tracked else (model._tree("a") / path).unlink()
    with pytest.raises(AssertionError, match="uncommitted edit lost"):
        model.check_edits()


def test_the_checker_finds_work_where_grove_keeps_it(model):
    model.setup("a")
    model.edit("a", tracked=False)
    model.teardown_one("a", force=True, delete_branch=False)
    assert not model._live("a") and model.done["removals"] == 1
    model.check_edits()  # salvaged: found under refs/grove-salvage/a/


def test_the_checker_complains_about_a_lost_ignored_file(model):
    model.setup("a")
    model.edit("a", tracked=False)
    model.check_ignored()
    (path,) = [p for a, p in model.ignored if a == "a"]
    (model._tree("a") / path).unlink()
    with pytest.raises(AssertionError, match="ignored file lost"):
        model.check_ignored()


def test_the_checker_finds_an_ignored_file_in_the_archive(model):
    model.setup("a")
    model.edit("a", tracked=False)
    model.teardown_one("a", force=True, delete_branch=False)
    assert not model._live("a")
    model.check_ignored()  # archived: found under agents/.archive/a/<utc>/files/


def test_the_checker_complains_about_a_run_that_did_nothing(model):
    with pytest.raises(AssertionError, match="exercised too little"):
        model.check_exercised()
    model.calls["setup"], model.errors["setup"] = [4, 4], "it always fails"
    model.done = dict.fromkeys(model.done, 5)
    with pytest.raises(AssertionError, match="setup failed every time it ran .* the last said: it always fails"):
        model.check_exercised()


def test_only_groves_own_errors_are_swallowed(model):
    assert model._quiet("refused", lambda: (_ for _ in ()).throw(GroveError("refused"))) is None
    with pytest.raises(KeyError):  # a bug in an operation is a failure, not a refusal
        model._quiet("buggy", lambda: {}["missing"])
    with pytest.raises(ValueError):  # the seed API's errors only where asked for
        model._quiet("api", lambda: int("x"))
    assert model.calls == {"refused": [1, 1], "buggy": [1, 0], "api": [1, 0]}


def test_the_checker_complains_about_a_merge_report_that_is_not_the_truth(model):
    from types import SimpleNamespace

    main = git(model.repo, "rev-parse", "main")
    other = git(model.repo, "commit-tree", "-m", "never merged", f"{main}^{{tree}}")
    model.check_merge_report(SimpleNamespace(errors=[], base_after=main, results=[]))
    with pytest.raises(AssertionError, match="merge said main is at"):
        model.check_merge_report(SimpleNamespace(errors=[], base_after=other, results=[]))
    said = SimpleNamespace(adw_id="a", outcome="merged", merged_commit=other)
    with pytest.raises(AssertionError, match="said merged, not in main"):
        model.check_merge_report(SimpleNamespace(errors=["left behind"], base_after=other, results=[said]))
