"""The safety invariants under concurrency (issue 20, "the proof"): several Grove processes at once.

Worker threads each run a seeded random mix of real `grove` processes (setup, teardown --force,
status, merge --cleanup, sync, pool, gc, doctor --fix, teardown --all) against one repository, and
kill -9 some of them (the whole process group) at a random moment. Between them, agents work: they
commit, edit tracked files and write new files. Agents work under Grove's own per-agent op lock,
like an agent that does one thing at a time, so an edit is never half-written when Grove looks.

Invariants, checked while the processes run and at the end:
- no two live agents hold the same port;
- no Grove process that was not killed printed a traceback;
- after `doctor --fix` and re-running interrupted setups: doctor is healthy, every commit an agent
  made is reachable, every uncommitted edit is in its worktree, a salvage ref or a moved-aside
  directory, and the user's own refs are untouched.

`GROVE_FUZZ_SEED=N` replays one run's choices (the interleaving itself is up to the machine);
`GROVE_FUZZ_CONCURRENT_RUNS` sets how many runs (`make fuzz` runs more).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from conftest import cli, git
from test_model import NothingIsLost

from grove.core import locks, state

IDS = ("a", "b", "c", "e")  # not `d`: test_model keeps that one for the user's own adw/d
WORKERS = 4
STEPS = int(os.environ.get("GROVE_FUZZ_STEPS") or 16)


class Concurrent(NothingIsLost):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()  # the model's own records, shared by the workers
        self.tracebacks: list[str] = []
        self.shared_ports: list[str] = []
        self.log: list[str] = []
        self.exits: dict[str, list[int]] = {}  # task -> exit codes (-9: killed)

    # -- agents working, one thing at a time under their op lock ---------------------------------

    def agent_works(self, adw_id: str, rng: random.Random) -> None:
        try:
            with locks.locked(self.settings.lock_path(f"op-{adw_id}"), 2, "busy"):
                with self.lock:
                    if rng.random() < 0.5:
                        self.commit(adw_id, detached=rng.random() < 0.2)
                    else:
                        self.edit(adw_id, tracked=rng.random() < 0.5)
        except Exception as exc:  # noqa: BLE001 - a busy agent (Grove is on it) just works later
            if "busy" not in str(exc):
                raise

    # -- Grove, as separate processes --------------------------------------------------------------

    def grove(self, args: list[str], kill_after: float | None) -> None:
        run = subprocess.Popen([*cli(), *args], cwd=self.repo, env=dict(os.environ), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        killed = False
        try:
            _, err = run.communicate(timeout=kill_after if kill_after is not None else 180)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                raise
            os.killpg(run.pid, signal.SIGKILL)
            killed = True
            _, err = run.communicate(timeout=60)
        with self.lock:
            self.exits.setdefault(args[0], []).append(-9 if killed else run.returncode)
        if not killed and "Traceback" in (err or ""):
            with self.lock:
                self.tracebacks.append(f"grove {' '.join(args)}:\n{err}")
        self.check_ports()

    def check_ports(self) -> None:
        """No port held by two agents whose worktrees exist (a read-only look at their states)."""
        holders: dict[int, str] = {}
        for adw_id in IDS:
            try:
                s = state.load(self.settings, adw_id)
            except Exception:  # noqa: BLE001 - a state being archived this very moment
                continue
            if not s or not s.get("ports") or not (self._tree(adw_id) / ".git").exists():
                continue
            for port in s["ports"].values():
                if port in holders and holders[port] != adw_id:
                    with self.lock:
                        self.shared_ports.append(f"port {port}: {holders[port]} and {adw_id}")
                holders[port] = adw_id


def _grove_args(rng: random.Random) -> list[str]:
    adw_id = rng.choice(IDS)
    return rng.choice([
        ["setup", "--adw-id", adw_id, "--no-install"],
        ["setup", "--adw-id", adw_id, "--no-install"],
        ["status", "--adw-id", adw_id, "--set", rng.choice(["completed", "in_progress", "failed"])],
        ["teardown", "--adw-id", adw_id, "--force"],
        ["merge", "--adw-id", adw_id, *(["--cleanup"] if rng.random() < 0.5 else [])],
        ["sync", "--adw-id", adw_id, *(["--strategy", "rebase"] if rng.random() < 0.3 else [])],
        ["pool", "--size", str(rng.choice([0, 1, 2])), "--no-fetch"],
        ["gc", "--max-age-days", "0"],
        ["doctor", "--fix"],
        ["teardown", "--all"],
    ])


def worker(model: Concurrent, seed: int, n: int) -> None:
    rng = random.Random(seed * 100 + n)
    for _ in range(STEPS):
        if rng.random() < 0.4:
            adw_id = rng.choice(IDS)
            model.log.append(f"w{n}: agent {adw_id} works")
            model.agent_works(adw_id, rng)
            continue
        args = _grove_args(rng)
        kill_after = round(rng.uniform(0.05, 0.8), 2) if rng.random() < 0.25 else None
        model.log.append(f"w{n}: grove {' '.join(args)}" + (f" (kill -9 after {kill_after}s)" if kill_after else ""))
        model.grove(args, kill_after)


def _exercised(model: Concurrent) -> None:
    """The run did what it is for (issue 25: a harness that stops working must not pass)."""
    done = {task: sum(1 for code in codes if code == 0) for task, codes in model.exits.items()}
    kills = sum(codes.count(-9) for codes in model.exits.values())
    print(f"concurrent run: {done}, kills {kills}, commits {len(model.commits)}, edits {len(model.edits)}")
    assert done.get("setup", 0) >= len(IDS) and kills >= 1 and len(model.commits) >= 2, (done, kills, model.commits)


def run_concurrently(seed: int) -> None:
    model = Concurrent()
    try:
        model.users_own_refs()
        for adw_id in IDS:  # every agent starts live with a commit, so the workers meet real work
            model.grove(["setup", "--adw-id", adw_id, "--no-install"], None)
            model.commit(adw_id, detached=False)
        threads = [threading.Thread(target=worker, args=(model, seed, n)) for n in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        assert not any(t.is_alive() for t in threads), "a worker hung"
        assert not model.tracebacks, "\n".join(model.tracebacks)
        _exercised(model)
        assert not model.shared_ports, "; ".join(model.shared_ports)
        model.converge()
        model.check_user_refs()
        model.check_ports()
        assert not model.shared_ports, "; ".join(model.shared_ports)
    except AssertionError as exc:
        raise AssertionError(f"invariant broken in a concurrent run, seed {seed} (choices replay with "
                             f"GROVE_FUZZ_SEED={seed}); the steps as they started:\n  " + "\n  ".join(model.log)
                             + f"\n{exc}") from None
    finally:
        model.close()


def _seeds() -> list[int]:
    if os.environ.get("GROVE_FUZZ_SEED"):
        first = int(os.environ["GROVE_FUZZ_SEED"])
        return [first + i for i in range(int(os.environ.get("GROVE_FUZZ_CONCURRENT_RUNS") or 1))]
    fresh = random.SystemRandom()
    return [fresh.randrange(2**31) for _ in range(int(os.environ.get("GROVE_FUZZ_CONCURRENT_RUNS") or 2))]


@pytest.mark.parametrize("seed", _seeds())
def test_concurrent_grove_processes_with_kill_9_lose_nothing(seed):
    run_concurrently(seed)


def test_the_port_check_sees_two_live_agents_on_one_port():
    """The checker has teeth: two live agents' states naming one port are reported."""
    model = Concurrent()
    try:
        for adw_id in ("a", "b"):
            assert subprocess.run([*cli(), "setup", "--adw-id", adw_id, "--no-install"], cwd=model.repo,
                                  capture_output=True, timeout=120).returncode == 0
        path = model.settings.state_path("b")
        data = json.loads(path.read_text())
        data["ports"] = state.load(model.settings, "a")["ports"]
        path.write_text(json.dumps(data))
        model.check_ports()
        assert model.shared_ports and "a and b" in model.shared_ports[0]
    finally:
        model.close()
