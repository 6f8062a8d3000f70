"""Several agents in one `setup` call (issue 12): one fetch, the git-facing heads one after another,
the tails in threads, one interpreter discovery for their uv projects. Counts, never times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import GROVE, git, inv, inv_json, push_from_a_clone

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.resources import deps  # noqa: E402


def logging_wrapper(bin_dir: Path, name: str, real: str, log: Path) -> None:
    """``name`` first on PATH: logs its arguments, then runs the real one."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    os.chmod(bin_dir / name, 0o755)


@pytest.fixture
def logged(tmp_path, monkeypatch):
    """git and uv log every call to tmp/<tool>.log."""
    bin_dir = tmp_path / "wrappers"
    for tool in ("git", "uv"):
        real = deps.find_tool(tool)
        assert real, f"{tool} is needed"
        logging_wrapper(bin_dir, tool, real, tmp_path / f"{tool}.log")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return lambda tool: (tmp_path / f"{tool}.log").read_text().splitlines() if (tmp_path / f"{tool}.log").exists() else []


def test_many_agents_fetch_once_and_check_out_each(repo, logged, tmp_path):
    # origin moves first: an origin on this machine whose main is where origin/main is needs no fetch
    push_from_a_clone(tmp_path / "origin.git", tmp_path / "other")
    data = inv_json(repo, "setup", "--adw-id", "f1", "--adw-id", "f2", "--adw-id", "f3", "--no-install")
    assert [s["adw_id"] for s in data["agents"]] == ["f1", "f2", "f3"] and data["errors"] == []
    calls = [line.split()[2] for line in logged("git") if line.startswith("-C")]
    assert calls.count("fetch") == 1, calls
    assert calls.count("worktree") == 3 and calls.count("reset") == 3, calls
    for adw_id in ("f1", "f2", "f3"):
        wt = repo / "trees" / adw_id
        assert git(wt, "status", "--porcelain") == "" and (wt / "upstream.txt").is_file()


def test_many_agents_share_one_interpreter_discovery(tmp_path, repo, logged):
    app = sample_app.build(tmp_path / "sample", deps.find_tool("uv"), None)
    before = len(logged("uv"))
    inv_json(app, "setup", "--adw-id", "u1", "--adw-id", "u2", "--adw-id", "u3", "--no-db")
    syncs = [line for line in logged("uv")[before:] if line.startswith("sync")]
    assert len(syncs) == 3, syncs
    discovered = [s for s in syncs if "--python" not in s]
    assert len(discovered) == 1, syncs
    chosen = {os.readlink(app / "trees" / i / "app/server/.venv/bin/python") for i in ("u1", "u2", "u3")}
    assert len(chosen) == 1, "every venv is made with the interpreter the first sync chose"
    assert all(s.endswith(f"--python {next(iter(chosen))}") for s in syncs if s not in discovered)
    for adw_id in ("u1", "u2", "u3"):
        venv = app / "trees" / adw_id / "app/server/.venv"
        out = subprocess.run([venv / "bin/python", "-c", "import sys; print(sys.prefix)"], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == str(venv)


def test_a_project_whose_discovery_inputs_differ_discovers_its_own(tmp_path):
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    for root, version in ((root_a, "3.11\n"), (root_b, "3.12\n")):
        (root / "app/server").mkdir(parents=True)
        (root / "app/server/pyproject.toml").write_text("[project]\nname='s'\n")
        (root / ".python-version").write_text(version)
    key_a = deps.discovery_key(root_a / "app/server", root_a)
    assert key_a != deps.discovery_key(root_b / "app/server", root_b)
    (root_b / ".python-version").write_text("3.11\n")
    assert key_a == deps.discovery_key(root_b / "app/server", root_b)
    assert deps.discovery_key(root_a / "app/server", root_b) is None  # not inside the worktree

    shared, runs, release = deps.SharedInterpreter(), [], threading.Event()

    def sync_a(python):
        runs.append(("a", python))
        release.wait(10)
        raise RuntimeError("the first sync failed")  # so nothing was chosen: the others discover

    def sync_b(python):
        runs.append(("b", python))

    first = threading.Thread(target=lambda: pytest.raises(RuntimeError, shared.sync, root_a / "app/server", root_a,
                                                          sync_a))
    first.start()
    while not runs:
        pass
    follower = threading.Thread(target=shared.sync, args=(root_b / "app/server", root_b, sync_b))
    follower.start()
    follower.join(0.2)
    assert follower.is_alive(), "an identical project waits for the first discovery"
    release.set()
    first.join(10)
    follower.join(10)
    assert runs == [("a", None), ("b", None)]
    (root_b / "app/server/.venv").mkdir()
    shared.sync(root_b / "app/server", root_b, sync_b)  # a project with a .venv keeps uv's own choice
    assert runs[-1] == ("b", None)


RESET_FAILS_FOR_BAD = """#!/usr/bin/env bash
# Fails for one agent only, so one tail fails while the others finish.
[ "${ADW_ID:-}" = bad ] && { echo "seed failed for $ADW_ID" >&2; exit 3; }
exit 0
"""


def test_one_failing_tail_rolls_back_that_agent_alone(repo):
    (repo / "scripts").mkdir(exist_ok=True)
    (repo / "scripts/reset_db.sh").write_text(RESET_FAILS_FOR_BAD)
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "add", "scripts/reset_db.sh")
    git(repo, "commit", "-qm", "reset script")
    git(repo, "push", "-q", "origin", "HEAD")
    out = inv(repo, "setup", "--adw-id", "ok1", "--adw-id", "bad", "--adw-id", "ok2", "--no-install", "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert [s["adw_id"] for s in data["agents"]] == ["ok1", "ok2"]
    assert [e["adw_id"] for e in data["errors"]] == ["bad"] and "rolled back" in data["errors"][0]["error"]
    assert not (repo / "trees" / "bad").exists()
    assert git(repo, "branch", "--list", "adw/bad") == ""
    assert sorted(a["adw_id"] for a in inv_json(repo, "list")) == ["ok1", "ok2"]


def test_a_bad_request_among_many_changes_nothing_for_it(repo):
    git(repo, "branch", "adw/mine")  # the user's own branch: no agent may take it
    out = inv(repo, "setup", "--adw-id", "good", "--adw-id", "mine", "--no-install", "--json")
    # `good` was set up, so the call is not "nothing changed" (exit 2): 1, with mine's own code in errors.
    assert out.returncode == 1, out.stderr
    assert [(e["adw_id"], e["exit_code"]) for e in json.loads(out.stdout)["errors"]] == [("mine", 2)]
    assert not (repo / "trees" / "mine").exists()
    assert git(repo, "rev-parse", "adw/mine") == git(repo, "rev-parse", "main")
    assert (repo / "trees" / "good").is_dir()


def test_a_crash_in_the_middle_of_many_converges(repo):
    out = inv(repo, "setup", "--adw-id", "k1", "--adw-id", "k2", "--adw-id", "k3", "--no-install",
              env={"GROVE_FAULT": "setup:after:worktree"})
    assert out.returncode != 0
    # k1 died after `worktree add --no-checkout`, before its checkout: doctor says to run setup again.
    assert "setup --adw-id k1" in inv(repo, "doctor", "--fix").stdout
    data = inv_json(repo, "setup", "--adw-id", "k1", "--adw-id", "k2", "--adw-id", "k3", "--no-install")
    assert sorted(s["adw_id"] for s in data["agents"]) == ["k1", "k2", "k3"] and data["errors"] == []
    for adw_id in ("k1", "k2", "k3"):
        assert git(repo / "trees" / adw_id, "status", "--porcelain") == ""
    health = inv(repo, "doctor", "--json")
    assert health.returncode == 0 and json.loads(health.stdout)["problems"] == [], health.stdout
