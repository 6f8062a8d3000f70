"""Adversarial review of the many-agent pipeline (setup_many), the shared interpreter discovery and
the task exit path. Real git, real processes, ordered by files and locks, never by sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GROVE, cli, git, inv, inv_json, settings_for, wait_for, port_leases

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.resources import deps  # noqa: E402

RESET_WRITES_FRESH = """#!/usr/bin/env bash
# The agent's "database": a file the reset makes anew (wiping what the agent wrote).
echo fresh > data.db
"""


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    git(repo, "push", "-q", "origin", "HEAD")


def commit_reset_script(repo: Path, text: str = RESET_WRITES_FRESH) -> None:
    (repo / "scripts").mkdir(exist_ok=True)
    (repo / "scripts/reset_db.sh").write_text(text)
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    commit_all(repo, "reset script")


def start_inv(repo: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*cli(), *args], cwd=repo, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_many_setup_revalidates_an_agent_another_process_set_up_meanwhile(repo):
    """Validation of every request happens before the heads; an agent set up by another process
    between its validation and its op lock must be treated as existing (its db kept), not as new."""
    from grove.core import locks

    commit_reset_script(repo)
    settings = settings_for(repo)
    registry = settings.port_registry
    # Hold a1's state lock so the many-setup stops in a1's head, after validating a1 and a2.
    with locks.locked(settings.lock_path("state-a1"), 0, "test holds it"):
        many = start_inv(repo, "setup", "--adw-id", "a1", "--adw-id", "a2", "--no-install", "--json")
        wait_for(lambda: registry.exists() and '"a1"' in registry.read_text(), "a1's port claim", many)
        # Meanwhile another process sets a2 up completely, and a2's agent writes to its database.
        inv(repo, "setup", "--adw-id", "a2", "--no-install", check=True)
        db = repo / "trees/a2/data.db"
        db.write_text("fresh\nthe agent's row\n")
    out, err = many.communicate(timeout=120)
    assert many.returncode == 0, err
    assert db.read_text() == "fresh\nthe agent's row\n", "a re-run wiped the database of an agent in use"


TRAP = """#!/bin/sh
# A smudge filter: runs inside git's checkout while git holds the worktree's index.lock. Armed once,
# it kill -9s its whole process group (the setup and its git children): a crash mid-checkout.
if [ -e "{arm}" ]; then
    rm -f "{arm}"
    kill -9 -"$(ps -o pgid= -p $$ | tr -d ' ')"
fi
cat
"""


def set_checkout_trap(repo: Path, tmp_path: Path) -> Path:
    """Five files behind the TRAP smudge filter, committed; returns the file that arms it."""
    for i in range(5):
        (repo / f"f{i}.txt").write_text(f"file {i}\n")
    (repo / ".gitattributes").write_text("*.txt filter=trap\n")
    commit_all(repo, "files behind a filter")
    arm = tmp_path / "armed"
    (tmp_path / "trap.sh").write_text(TRAP.format(arm=arm))
    os.chmod(tmp_path / "trap.sh", 0o755)
    git(repo, "config", "filter.trap.smudge", str(tmp_path / "trap.sh"))
    return arm


def test_kill_9_during_a_deferred_checkout_then_doctor_and_a_rerun_converge(repo, tmp_path):
    """A kill -9 while `git reset --hard` checks a new worktree out leaves git's index.lock and no
    index; `doctor --fix` and a re-run must finish that agent, as for every other crash point."""
    arm = set_checkout_trap(repo, tmp_path)
    arm.touch()
    ids = ["k1", "k2", "k3"]
    args = [x for i in ids for x in ("--adw-id", i)]
    crashed = subprocess.run([*cli(), "setup", *args, "--no-install"], cwd=repo, capture_output=True, text=True,
                             start_new_session=True, timeout=120)
    assert crashed.returncode == -9 and not arm.exists(), crashed.stderr
    admin = [d for d in (repo / ".git/worktrees").iterdir() if d.name in ids]
    assert any(not (d / "index").exists() for d in admin), "killed mid-checkout: a worktree has no index yet"
    inv(repo, "doctor", "--fix")
    again = inv(repo, "setup", *args, "--no-install", "--json")
    assert again.returncode == 0, again.stderr
    assert [s["adw_id"] for s in json.loads(again.stdout)["agents"]] == ids
    for adw_id in ids:
        wt = repo / "trees" / adw_id
        assert git(wt, "status", "--porcelain") == "", adw_id
        assert (wt / "f0.txt").read_text() == "file 0\n"
    health = inv(repo, "doctor", "--json")
    assert health.returncode == 0 and json.loads(health.stdout)["problems"] == [], health.stdout


def test_a_worktree_add_killed_before_commondir_is_repaired_by_doctor(repo):
    """`git worktree add` killed between its admin dir's lock file and `commondir` (the CI saw it
    under load, in the test above): git then lists no worktree at all, so doctor could not see it
    and every later setup failed. doctor --fix removes it (it held nothing), and a setup works."""
    admin = repo / ".git/worktrees/x1"
    admin.mkdir(parents=True)
    (admin / "locked").write_text("initializing\n")
    (repo / "trees/x1").mkdir(parents=True)
    (admin / "gitdir").write_text(f"{repo / 'trees/x1/.git'}\n")
    (repo / "trees/x1/.git").write_text(f"gitdir: {admin}\n")
    (admin / "commondir").write_text("")  # created, not yet written, when the kill came
    assert subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True).returncode != 0
    fixed = json.loads(inv(repo, "doctor", "--fix", "--json").stdout)
    assert any(p["kind"] == "stillborn_worktree" and p["fixed"] for p in fixed["problems"]), fixed
    assert not admin.exists() and not (repo / "trees/x1").exists()
    assert inv_json(repo, "setup", "--adw-id", "x1", "--no-install")["adw_id"] == "x1"
    assert inv_json(repo, "doctor")["healthy"]


def test_held_an_id_busy_in_another_process_fails_alone(repo):
    from grove.core import locks

    settings = settings_for(repo)
    with locks.locked(settings.lock_path("op-b"), 0, "test holds it"):
        out = inv(repo, "setup", "--adw-id", "a", "--adw-id", "b", "--adw-id", "c", "--no-install", "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 1
    assert [s["adw_id"] for s in data["agents"]] == ["a", "c"]
    assert [e["adw_id"] for e in data["errors"]] == ["b"]
    assert not (repo / "trees/b").exists() and not settings.state_path("b").exists()
    assert git(repo, "branch", "--list", "adw/b") == ""


def test_held_pooled_worktrees_taken_by_a_many_setup(repo):
    commit_reset_script(repo)
    inv(repo, "pool", "--size", "2", "--quiet", check=True)
    out = inv(repo, "setup", "--adw-id", "p1", "--adw-id", "p2", "--adw-id", "p3", "--no-install", "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 0
    assert [s["adw_id"] for s in data["agents"]] == ["p1", "p2", "p3"]
    assert sorted(s["from_pool"] for s in data["agents"]) == [False, True, True]
    for a in ("p1", "p2", "p3"):
        wt = repo / "trees" / a
        assert git(wt, "status", "--porcelain") == "", a
        assert git(wt, "symbolic-ref", "HEAD") == f"refs/heads/adw/{a}"
        assert (wt / "data.db").read_text() == "fresh\n"
    health = inv(repo, "doctor", "--json")
    assert health.returncode == 0, health.stdout


class SlowStream:
    """A stderr whose writes take a moment (a pipe to a slow reader): threads get to run in between."""

    def __init__(self):
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        time.sleep(0.002)
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_lines_of_agents_set_up_together_are_never_spliced(repo):
    """Heads in the main thread and tails in workers print at once; each line must stay whole."""
    from grove.ops import chain
    from grove.core.report import Reporter

    stream = SlowStream()
    ids = [f"w{i}" for i in range(4)]
    states, errors = chain.setup_many(settings_for(repo), [chain.Request(i, install=False) for i in ids],
                                      Reporter(stream=stream))
    assert errors == [] and len(states) == len(ids)
    lines = "".join(stream.parts).splitlines()
    spliced = [line for line in lines if line.count("[w") > 1 or not line.startswith(("[w", "warning"))]
    assert spliced == [], spliced


def test_one_agents_unexpected_error_keeps_the_others_report(repo):
    """A tail failing with something other than a GroveError (here a latin-1 .env an agent saved) must
    not throw away the outcome of the agents that were set up: one JSON document, exit 1."""
    inv(repo, "setup", "--adw-id", "b", "--no-install", check=True)
    (repo / "trees/b/.env").write_bytes(b"NAME=caf\xe9\n")  # the agent saved its .env as latin-1
    out = inv(repo, "setup", "--adw-id", "a", "--adw-id", "b", "--adw-id", "c", "--no-install", "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert [s["adw_id"] for s in data["agents"]] == ["a", "c"]
    assert [e["adw_id"] for e in data["errors"]] == ["b"] and ".env" in data["errors"][0]["error"]
    assert "Traceback" not in out.stderr


def test_a_many_setup_holds_a_bounded_number_of_files_open(repo):
    """Every agent's op lock stayed open until the last tail ended: 45 agents under a 48-file limit
    (macOS's default is 256) died with EMFILE and a traceback; b09aa6b's threads held at most 16."""
    import resource

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
    ids = [f"n{i}" for i in range(45)]
    args = [x for i in ids for x in ("--adw-id", i)]
    env = dict(os.environ, ADW_PORT_SLOTS="50",
               ADW_FRONTEND_PORT_BASE=str(int(os.environ["ADW_BACKEND_PORT_BASE"]) + 50))
    out = subprocess.run([*cli(), "setup", *args, "--no-install", "--no-db", "--json"], cwd=repo, env=env,
                         capture_output=True, text=True, preexec_fn=low, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    assert len(json.loads(out.stdout)["agents"]) == len(ids)


def venv_version(venv: Path) -> str:
    return subprocess.run([venv / "bin/python", "-c", "import sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_held_shared_interpreter_follows_each_worktrees_pin(tmp_path, repo):
    """A worktree whose discovery inputs differ (its own untracked pin) discovers on its own."""
    uv = deps.find_tool("uv")
    for version in ("3.10", "3.12"):
        probe = tmp_path / f"probe-{version}"
        probe.mkdir()
        (probe / ".python-version").write_text(f"{version}\n")  # pyenv's shims read it too
        if subprocess.run([uv, "python", "find"], cwd=probe, capture_output=True,
                          env=dict(os.environ, UV_PYTHON_DOWNLOADS="never")).returncode:
            pytest.skip(f"needs a Python {version} uv can find")
    app = sample_app.build(tmp_path / "sample", uv, None)
    (app / "app/server/.python-version").write_text("3.10\n")
    commit_all(app, "pin")
    # x exists without an install; its worktree gets its own pin, untracked
    inv(app, "setup", "--adw-id", "x", "--no-install", "--no-db", check=True)
    (app / "trees/x/app/server/.python-version").write_text("3.12\n")
    out = inv(app, "setup", "--adw-id", "x", "--adw-id", "y", "--adw-id", "z", "--no-db", "--json",
              env={"UV_PYTHON_DOWNLOADS": "never"})
    assert out.returncode == 0, out.stderr
    for i, want in (("x", "(3, 12)"), ("y", "(3, 10)"), ("z", "(3, 10)")):
        assert venv_version(app / "trees" / i / "app/server/.venv") == want, i


def test_held_a_rerun_after_a_crash_keeps_install_and_db(tmp_path, repo):
    import sqlite3
    app = sample_app.build(tmp_path / "sample", deps.find_tool("uv"), None)
    inv(app, "setup", "--adw-id", "e1", "--adw-id", "e2", check=True)
    dbp = app / "trees/e1/app/server/app.db"
    with sqlite3.connect(dbp) as c:
        c.execute("insert into agent values ('row', 1)")
    venv_before = (app / "trees/e1/app/server/.venv/pyvenv.cfg").stat().st_mtime_ns
    crashed = inv(app, "setup", "--adw-id", "e1", "--adw-id", "e3", "--adw-id", "e2",
                  env={"GROVE_FAULT": "setup:after:checkout"})  # e3's checkout: the process dies
    assert crashed.returncode == -9
    inv(app, "doctor", "--fix")
    data = inv_json(app, "setup", "--adw-id", "e1", "--adw-id", "e2", "--adw-id", "e3")
    steps = {s["adw_id"]: {k: v["outcome"] for k, v in s["steps"].items()} for s in data["agents"]}
    assert steps["e1"]["install"] == "kept" and steps["e1"]["db"] == "kept"
    assert steps["e2"]["install"] == "kept" and steps["e2"]["db"] == "kept"
    with sqlite3.connect(dbp) as c:
        assert ("row", 1) in c.execute("select * from agent").fetchall()
    assert (app / "trees/e1/app/server/.venv/pyvenv.cfg").stat().st_mtime_ns == venv_before
    health = inv(app, "doctor", "--json")
    assert health.returncode == 0, health.stdout


def test_held_registry_stays_exact_when_tails_roll_back_while_heads_claim(repo):
    commit_reset_script(repo, '#!/bin/sh\ncase "$ADW_ID" in b*) exit 3;; esac\nexit 0\n')
    ids = [f"{p}{i}" for i in range(5) for p in ("a", "b")]
    args = [x for i in ids for x in ("--adw-id", i)]
    out = inv(repo, "setup", *args, "--no-install", "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 1
    assert [s["adw_id"] for s in data["agents"]] == [i for i in ids if i.startswith("a")]
    assert [e["adw_id"] for e in data["errors"]] == [i for i in ids if i.startswith("b")]
    reg = port_leases(repo)
    assert sorted(c["adw_id"] for c in reg.values()) == sorted(i for i in ids if i.startswith("a"))
    assert sorted(c.get("adw_id") for c in reg.values()) == sorted(s["adw_id"] for s in data["agents"])
    assert {str(s["slot"]) for s in data["agents"]} == set(reg)
    assert git(repo, "branch", "--list", "adw/b*") == ""
    h = inv(repo, "doctor", "--json")
    assert h.returncode == 0 and json.loads(h.stdout)["problems"] == [], h.stdout


def test_an_unforeseen_exception_in_one_tail_becomes_that_agents_error(repo):
    """Whatever a tail raises, the agents that were set up are returned and the failed one is rolled
    back and listed: here a step of b's raises a plain RuntimeError (a stand-in for any bug)."""
    from contextlib import contextmanager

    from grove.ops import chain
    from grove.core.report import Reporter

    class Breaks(Reporter):
        def for_agent(self, adw_id):
            return Breaks(self.quiet, f"[{adw_id}] ", self.stream)

        @contextmanager
        def step(self, name, op, outcomes=None, long=False):
            with super().step(name, op, outcomes, long) as info:
                if name == "env" and self.prefix == "[b] ":
                    raise RuntimeError("a bug in a step")
                yield info

    settings = settings_for(repo)
    states, errors = chain.setup_many(settings, [chain.Request(i, install=False) for i in ("a", "b", "c")],
                                      Breaks(quiet=True))
    assert [s["adw_id"] for s in states] == ["a", "c"]
    assert [(e["adw_id"], e["exit_code"]) for e in errors] == [("b", 1)] and "a bug in a step" in errors[0]["error"]
    assert not (repo / "trees/b").exists() and not settings.state_path("b").exists()
