"""Proof under fire: real processes racing, SIGKILL at every step, bad input, security (issue 5).

Bounded in count and time so the whole suite fits CI on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import GROVE, LIB, cli, commit_file, git, inv, inv_json, snapshot, port_leases

SETUP_STEPS = ["validate", "fetch", "ports", "worktree", "submodules", "ports_env", "env", "repoint", "install", "db"]


def spawn(repo, *args, env=None):
    return subprocess.Popen([*cli(), *args], cwd=repo, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs, timeout=240):
    return [(p.wait(timeout=timeout), p.stdout.read(), p.stderr.read()) for p in procs]


# -- concurrency -------------------------------------------------------------------------------


def test_thirty_processes_fifteen_slots_exactly_fifteen_win_and_losers_leave_nothing(repo):
    # Overflow off (issue 23): the 15 slots are all there is, as in the seed.
    procs = [spawn(repo, "setup", "--adw-id", f"r{i:02d}", "--no-install", "--quiet", env={"ADW_PORT_OVERFLOW": ""})
             for i in range(30)]
    results = finish(procs)
    winners = [i for i, (code, _, _) in enumerate(results) if code == 0]
    losers = [i for i, (code, _, _) in enumerate(results) if code != 0]
    assert len(winners) == 15 and len(losers) == 15
    for i in losers:
        code, _, err = results[i]
        assert code == 1 and "no free slot" in err, err
        assert not (repo / f"trees/r{i:02d}").exists() and not (repo / f"agents/r{i:02d}").exists()
    claims = port_leases(repo)
    assert sorted(c["adw_id"] for c in claims.values()) == sorted(f"r{i:02d}" for i in winners)
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/adw/").split()
    assert sorted(branches) == sorted(f"adw/r{i:02d}" for i in winners), "no stray branches"


def test_ten_processes_same_id_end_with_one_worktree_and_one_claim(repo):
    results = finish([spawn(repo, "setup", "--adw-id", "same", "--no-install", "--quiet") for _ in range(10)])
    assert any(code == 0 for code, _, _ in results)
    for code, _, err in results:
        assert code == 0 or (code == 1 and "already being set up" in err), err
    assert git(repo, "worktree", "list", "--porcelain").count("trees/same\n") == 1
    claims = port_leases(repo)
    assert [c["adw_id"] for c in claims.values()] == ["same"]
    assert inv_json(repo, "setup", "--adw-id", "same", "--no-install")["status"] == "created"


READER = """
import json, os, sys, time, pathlib
root, deadline, bad = pathlib.Path(sys.argv[1]), time.time() + float(sys.argv[2]), 0
reads = 0
while time.time() < deadline:
    for path in list(root.glob("agents/*/adw_state.json")) + [pathlib.Path(os.environ["ADW_PORT_REGISTRY"])]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        try:
            json.loads(text); reads += 1
        except ValueError:
            bad += 1; print("TORN", path, repr(text[:80]))
print("reads", reads)
sys.exit(1 if bad else 0)
"""


def test_interleaved_operations_keep_json_valid_and_doctor_clean(repo):
    """setup, status, teardown and merge on different ids for a bounded time, a reader polling all JSON."""
    reader = subprocess.Popen([sys.executable, "-c", READER, str(repo), "12"], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    rounds = 0
    # Each round leaves two agents behind (merged, in_progress): 6 rounds stay inside the 15 slots.
    while time.time() < deadline and rounds < 6:
        ids = [f"i{rounds}{k}" for k in range(3)]
        finish([spawn(repo, "setup", "--adw-id", i, "--no-install", "--quiet") for i in ids])
        commit_file(repo / f"trees/{ids[0]}", f"{ids[0]}.txt", "work\n")
        finish([spawn(repo, "status", "--adw-id", i, "--set", "completed") for i in ids])
        finish([spawn(repo, "merge", "--adw-id", ids[0]), spawn(repo, "teardown", "--adw-id", ids[1]),
                spawn(repo, "status", "--adw-id", ids[2], "--set", "in_progress")])
        rounds += 1
    out, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0, out
    assert int(out.split()[-1]) > 100, "the reader really read while writers ran"
    doctor = inv(repo, "doctor")
    assert doctor.returncode == 0, doctor.stdout


# -- crashes -----------------------------------------------------------------------------------


def _setup_points():
    return [f"setup:{when}:{step}" for step in SETUP_STEPS for when in ("before", "after")]


@pytest.mark.parametrize("point", _setup_points())
def test_setup_killed_at_every_step_recovers(repo, point):
    pristine = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "crash", "--no-install", env={"GROVE_FAULT": point})
    assert out.returncode == -signal.SIGKILL
    again = inv(repo, "setup", "--adw-id", "crash", "--no-install")
    if again.returncode != 0:  # the documented second way: doctor --fix, then the command
        inv(repo, "doctor", "--fix")
        again = inv(repo, "setup", "--adw-id", "crash", "--no-install")
    assert again.returncode == 0, again.stderr
    assert inv(repo, "doctor").returncode == 0
    inv(repo, "teardown", "--adw-id", "crash", "--force", "--delete-branch", check=True)
    after = snapshot(repo)
    after["files"] = [f for f in after["files"] if not f.startswith("agents/.archive") and f != "trees"]
    pristine_files = [f for f in pristine["files"]]
    assert after["refs"] == pristine["refs"] and after["worktrees"] == pristine["worktrees"]
    assert after["registry"] == {} and [f for f in after["files"] if not f.startswith("agents")] == pristine_files


@pytest.mark.parametrize("point", ["teardown:before:worktree", "teardown:after:worktree", "teardown:after:branch",
                                   "teardown:after:ports", "teardown:after:state"])
def test_teardown_killed_at_every_step_recovers(repo, point):
    pristine = snapshot(repo)
    inv(repo, "setup", "--adw-id", "td", "--no-install", check=True)
    out = inv(repo, "teardown", "--adw-id", "td", "--force", "--delete-branch", env={"GROVE_FAULT": point})
    assert out.returncode == -signal.SIGKILL
    again = inv(repo, "teardown", "--adw-id", "td", "--force", "--delete-branch")
    if again.returncode != 0:
        assert again.returncode == 2 and "no agent" in again.stderr, again.stderr  # it had already finished
    assert inv(repo, "doctor").returncode == 0
    after = snapshot(repo)
    assert after["refs"] == pristine["refs"] and after["worktrees"] == pristine["worktrees"]
    assert after["registry"] == {}


@pytest.mark.parametrize("point", ["merge:before:m1", "merge:before:m2", "merge:before:publish",
                                   "merge:after:publish"])
def test_merge_killed_at_every_step_is_old_or_new_and_rerun_completes(repo, point):
    for name in ("m1", "m2"):
        inv(repo, "setup", "--adw-id", name, "--no-install", check=True)
        commit_file(repo / f"trees/{name}", f"{name}.txt", f"{name}\n")
        inv(repo, "status", "--adw-id", name, "--set", "completed", check=True)
    before = git(repo, "rev-parse", "main")
    out = inv(repo, "merge", "--all", env={"GROVE_FAULT": point})
    assert out.returncode == -signal.SIGKILL
    now = git(repo, "rev-parse", "main")
    files = git(repo, "ls-tree", "--name-only", "main").split()
    assert now == before or {"m1.txt", "m2.txt"} <= set(files), "old base or the fully merged one"
    again = inv(repo, "merge", "--adw-id", "m1", "--adw-id", "m2", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {"m1.txt", "m2.txt"} <= set(git(repo, "ls-tree", "--name-only", "main").split())
    assert git(repo, "status", "--porcelain") == ""
    assert inv(repo, "doctor").returncode == 0


WRITER = """
import sys; sys.path.insert(0, sys.argv[1])
from pathlib import Path
from grove.core.locks import atomic_write_json
path, n = Path(sys.argv[2]), int(sys.argv[3])
while True:
    n += 1
    atomic_write_json(path, {"n": n, "pad": "x" * 20000})
    if n == int(sys.argv[3]) + 1:
        print("wrote", flush=True)
"""


def test_sigkill_during_state_writes_never_tears_the_file(tmp_path):
    """A writer rewriting a state file is killed at a different moment each round while a reader
    reads it: every read and the file left behind are whole, and hold the newest numbers written.
    (Issue 25: the kill came after a fixed sleep, possibly before any write, and `n >= 0` could not fail.)"""
    path = tmp_path / "adw_state.json"
    path.write_text(json.dumps({"n": 0, "pad": "x" * 20000}))
    last = 0
    for i in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(LIB), str(path), str(last)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "wrote\n", "the writer wrote before it was killed"
            seen = [json.loads(path.read_text())["n"] for _ in range(i % 5 * 4)]  # a torn read raises
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        data = json.loads(path.read_text())
        assert data["n"] > last and data["n"] >= max(seen, default=0) and len(data["pad"]) == 20000
        last = data["n"]


HOLDER = """
import sys, time; sys.path.insert(0, sys.argv[1])
from pathlib import Path
from grove.core.locks import locked
with locked(Path(sys.argv[2]), 1, "busy"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_held_by_a_dead_process_is_released(tmp_path):
    from grove.core.errors import GroveError
    from grove.core.locks import locked

    lock = tmp_path / "repo.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(LIB), str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(GroveError, match=f"held by pid {holder.pid}"):
        with locked(lock, 0.2, "busy"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locked(lock, 2, "busy"):
        pass
    assert lock.exists(), "lock files are never deleted"


FILELOCK_HOLDER = """
import sys, time
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("first", ["grove", "filelock"])
def test_grove_s_locks_and_filelock_s_exclude_each_other(tmp_path, first):
    """Grove's locks are flock on the sidecar file, as filelock's are (older Groves took them through
    filelock): whichever holds it, the other is refused, in another process as in this one."""
    from filelock import FileLock, Timeout
    from grove.core.errors import GroveError
    from grove.core.locks import locked

    lock = tmp_path / "repo.lock"
    argv = [sys.executable, "-c", HOLDER, str(LIB), str(lock)] if first == "grove" else \
        [sys.executable, "-c", FILELOCK_HOLDER, str(lock)]
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GroveError, match="busy"):
            with locked(lock, 0, "busy"):
                pass
        with pytest.raises(GroveError, match="busy"):
            with locked(lock, 0.2, "busy"):  # waited for, then given up
                pass
        with pytest.raises(Timeout):
            FileLock(lock, timeout=0).acquire()
        with locked(tmp_path / "other.lock", 0, "busy"):  # only that lock is held
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with locked(lock, 0, "busy"):
        with pytest.raises(GroveError, match="busy"):  # two holders in one process exclude each other too
            with locked(lock, 0, "busy"):
                pass


RELEASER = """
import sys, time; sys.path.insert(0, sys.argv[1])
from pathlib import Path
from grove.core.locks import locked
with locked(Path(sys.argv[2]), 1, "busy"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_waiter_gets_the_lock_once_its_holder_lets_go(tmp_path):
    """A busy lock is tried again every few ms on the descriptor it keeps open (issue 24 §3): the
    waiter gets it once the holder lets go, within its timeout; one that gave up holds nothing."""
    import threading

    from grove.core.errors import GroveError
    from grove.core.locks import locked

    lock = tmp_path / "repo.lock"
    holder = subprocess.Popen([sys.executable, "-c", RELEASER, str(LIB), str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(GroveError, match=f"held by pid {holder.pid}"):
        with locked(lock, 0.1, "busy"):
            pass
    got = threading.Event()

    def waiter():
        with locked(lock, 60, "busy"):
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not got.wait(0.2), "the holder still holds it"
    holder.stdin.write("go\n")
    holder.stdin.flush()
    holder.wait()
    thread.join(60)
    assert got.is_set(), "the waiter got the lock once the holder let go"


class _InterruptedOs:
    """os, but Ctrl-C arrives in fstat: right after a lock is taken, before it is handed over."""

    def __getattr__(self, name):
        return getattr(os, name)

    def fstat(self, fd):
        raise KeyboardInterrupt


def test_a_lock_interrupted_between_its_flock_and_its_holder_is_not_left_held(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, which proc turns into KeyboardInterrupt) a moment after the flock: the
    lock is let go, and no descriptor is left open, in a process that goes on (`pool --follow`)."""
    from grove.core import locks

    lock = tmp_path / "repo.lock"
    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(locks, "os", _InterruptedOs())
    with pytest.raises(KeyboardInterrupt):
        with locks.locked(lock, 1, "busy"):
            pass
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == before
    with locks.locked(lock, 0, "busy"):
        pass


def test_dead_claim_is_reclaimed_by_the_next_setup(repo):
    registry = repo / "agents/.grove/ports.json"
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"version": 1, "claims": {
        str(i): {"adw_id": f"dead{i}", "pid": 999990 + i} for i in range(2)}}))
    state = inv_json(repo, "setup", "--adw-id", "alive", "--no-install", env={"ADW_PORT_SLOTS": "2"})
    assert state["slot"] in (0, 1)
    claims = port_leases(repo)
    assert claims[str(state["slot"])]["adw_id"] == "alive" and len(claims) == 1, "both dead claims reclaimed"


# -- bad input ---------------------------------------------------------------------------------

BAD_IDS = ["", ".", "..", "../x", "a/b", "-rf", "--help", " a", "a b", "a;id", "$(id)", "`id`", "a\nb",
           "a\x00b", "x" * 200, "аbc", "CON", "nul"]


def test_bad_ids_exit_2_and_change_nothing(repo):
    inv(repo, "setup", "--adw-id", "Existing", "--no-install", check=True)
    before = snapshot(repo)
    for bad in BAD_IDS + ["existing"]:
        if "\x00" in bad:
            # argv cannot carry NUL; the library refuses it directly.
            from grove.core import ids
            with pytest.raises(Exception) as err:
                ids.check_id(bad)
            assert getattr(err.value, "code", None) == 2
            continue
        out = inv(repo, "setup", f"--adw-id={bad}", "--no-install")
        assert out.returncode == 2, (bad, out.stderr)
        assert "invalid adw_id" in out.stderr or "only by case" in out.stderr or "required" in out.stderr, bad
        assert snapshot(repo) == before, bad


BAD_CONFIG = [
    ({"ADW_BACKEND_PORT_BASE": "80"}, "outside 1024..65535"),
    ({"ADW_FRONTEND_PORT_BASE": "70000"}, "outside 1024..65535"),
    ({"ADW_BACKEND_PORT_BASE": "9100", "ADW_FRONTEND_PORT_BASE": "9105"}, "port ranges overlap"),
    ({"ADW_BACKEND_PORT_BASE": "65530"}, "runs past 65535"),
    ({"ADW_PORT_SLOTS": "0"}, "ADW_PORT_SLOTS=0 is outside"),
    ({"ADW_PORT_SLOTS": "-3"}, "ADW_PORT_SLOTS=-3 is outside"),
    ({"ADW_PORT_SLOTS": "many"}, "not a whole number"),
    ({"ADW_TREES_DIR": "../elsewhere"}, "must be a relative path inside"),
    ({"ADW_TREES_DIR": "/tmp/abs"}, "must be a relative path inside"),
    ({"ADW_BASE_BRANCH": "nope"}, "does not exist"),
    ({"ADW_BASE_BRANCH": "bad..name"}, "git refuses"),
    ({"ADW_MERGE_STRATEGY": "octopus"}, "not one of"),
    ({"ADW_EXTRA_PORTS": "lower=9300"}, "not NAME=BASE"),
]


@pytest.mark.parametrize("env,message", BAD_CONFIG, ids=[m for _, m in BAD_CONFIG])
def test_bad_config_exits_2_and_changes_nothing(repo, env, message):
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "cfg", "--no-install", env=env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert snapshot(repo) == before


@pytest.mark.parametrize("which", ["trees", "agents"])
def test_symlinked_layout_pointing_outside_is_refused(repo, tmp_path, which):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo / which)
    out = inv(repo, "setup", "--adw-id", "sym", "--no-install")
    assert out.returncode == 2 and "resolves outside the repository" in out.stderr
    assert list(outside.iterdir()) == []


def test_bad_branch_names_exit_2(repo):
    for bad in ["a..b", "-x", "a b", "end.lock", "a~1", "x:y"]:
        out = inv(repo, "setup", "--adw-id", "br", f"--branch={bad}", "--no-install")
        assert out.returncode == 2, (bad, out.stderr)
    assert not (repo / "trees/br").exists()


def test_corrupt_files_are_named_and_never_replaced(repo):
    inv(repo, "setup", "--adw-id", "c1", "--no-install", check=True)
    state_file = repo / "agents/c1/adw_state.json"
    state_file.write_text("{torn")
    out = inv(repo, "setup", "--adw-id", "c1", "--no-install")
    assert out.returncode == 1 and str(state_file) in out.stderr and state_file.read_text() == "{torn"
    registry = repo / "agents/.grove/ports.json"
    registry.write_text("[]")
    out = inv(repo, "setup", "--adw-id", "c2", "--no-install")
    # Issue 23: a registry Grove cannot read is bad input (exit 2), before anything changes.
    assert out.returncode == 2 and str(registry) in out.stderr and registry.read_text() == "[]"


def test_a_file_holding_json_null_is_corrupt_not_absent(repo):
    # json.loads("null") is None, which is also what a missing file reads as: a state file holding
    # `null` was taken for no agent (setup wrote a fresh state over it, list and gc crashed on it),
    # and a `null` ownership journal for an empty one (setup replaced it, forgetting what it held).
    inv(repo, "setup", "--adw-id", "n1", "--no-install", check=True)
    state_file = repo / "agents/n1/adw_state.json"
    state_file.write_text("null")
    for args in (["setup", "--adw-id", "n1", "--no-install"], ["list"], ["gc"]):
        out = inv(repo, *args)
        assert out.returncode == 1 and str(state_file) in out.stderr and "Traceback" not in out.stderr, (args, out)
    assert state_file.read_text() == "null"
    state_file.unlink()
    journal = repo / "agents/.grove/owned.json"
    journal.write_text("null")
    out = inv(repo, "setup", "--adw-id", "n2", "--no-install")
    assert out.returncode == 1 and str(journal) in out.stderr and journal.read_text() == "null"


def test_env_file_with_invalid_line_is_named(repo):
    (repo / ".env").write_text("GOOD=1\nthis is not an env line\n")
    out = inv(repo, "setup", "--adw-id", "envbad", "--no-install")
    assert out.returncode == 2 and f"{repo / '.env'} line 2" in out.stderr
    assert not (repo / "trees/envbad").exists() and port_leases(repo) == {}


# -- security ----------------------------------------------------------------------------------


def test_no_shell_anywhere_but_the_validate_command():
    # rglob (issue 25): since the layout of issue 19 the modules live in subpackages, and a glob of
    # the top level alone found no merge.py, so this test failed and checked nothing below it.
    sources = sorted((LIB / "grove").rglob("*.py")) + [GROVE / "tasks.py"]
    assert len(sources) > 40
    for path in sources:
        text = path.read_text()
        assert "shell=True" not in text and "os.system(" not in text and "os.popen(" not in text, path
    shells = [p.name for p in sources if re.search(r'"bash", "-c"', p.read_text())]
    assert shells == ["merge.py"], "only the user's own --validate command goes through a shell"


def test_env_values_are_never_printed_and_copies_stay_0600(repo):
    (repo / ".env").write_text("API_KEY=hunter2-secret\nBACKEND_PORT=1\n")
    os.chmod(repo / ".env", 0o600)
    out = inv(repo, "setup", "--adw-id", "sec", "--no-install", "--json")
    assert out.returncode == 0
    assert "hunter2" not in out.stdout + out.stderr
    assert (os.stat(repo / "trees/sec/.env").st_mode & 0o777) == 0o600
    listing = inv(repo, "list") .stdout + inv(repo, "status", "--adw-id", "sec").stdout
    assert "hunter2" not in listing
