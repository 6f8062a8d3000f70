"""Checkouts that a crash cannot leave half-done (issue 20, items 4 and 6).

A merge brings the user's checkout of the base along; a sync merges the base into an agent's
worktree. Killed midway, either used to leave files part-way between two commits (and sometimes
git's index.lock) that a re-run refused as "uncommitted changes" and doctor called healthy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cli, commit_file, git, inv, inv_json
from test_merge import agent

MANY = 120  # files the merge changes: enough that a kill lands while they are being written


def _agent_with_many_files(repo: Path, adw_id: str = "big") -> Path:
    wt = agent(repo, adw_id, {}, status="created")
    for i in range(MANY):
        (wt / f"f{i:03}.txt").write_text(f"agent {i}\n" * 20)
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "many files")
    inv(repo, "status", "--adw-id", adw_id, "--set", "completed", check=True)
    return wt


def doctor(repo: Path, *flags: str) -> dict:
    out = inv(repo, "doctor", *flags, "--json")
    report = json.loads(out.stdout)
    assert out.returncode == (0 if report["healthy"] else 1)
    return report


def _clean_and_at(repo: Path, commit: str) -> None:
    assert git(repo, "rev-parse", "HEAD") == commit
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == "", "nothing in between is left"
    assert not (repo / ".git" / "index.lock").exists()


@pytest.mark.parametrize("point", ["fast-forward:after:files", "fast-forward:after:ref"])
def test_a_merge_killed_while_bringing_the_checkout_along_is_finished_by_a_rerun(repo, point):
    _agent_with_many_files(repo)
    killed = inv(repo, "merge", "--adw-id", "big", env={"GROVE_FAULT": point})
    assert killed.returncode == -signal.SIGKILL
    report = doctor(repo)
    assert [p["kind"] for p in report["problems"]] == ["interrupted_fast_forward"] and not report["healthy"]
    summary = inv_json(repo, "merge", "--adw-id", "big")
    assert summary["results"][0]["outcome"] == "merged"
    _clean_and_at(repo, git(repo, "rev-parse", "main"))
    assert git(repo, "merge-base", "--is-ancestor", "adw/big", "main") == ""
    assert doctor(repo)["healthy"]


def test_doctor_fix_finishes_an_interrupted_fast_forward(repo):
    _agent_with_many_files(repo)
    killed = inv(repo, "merge", "--adw-id", "big", env={"GROVE_FAULT": "fast-forward:after:ref"})
    assert killed.returncode == -signal.SIGKILL
    assert git(repo, "status", "--porcelain", "--untracked-files=no") != "", "the index is still the old one"
    fixed = doctor(repo, "--fix")
    assert fixed["fixed"] == 1 and fixed["healthy"]
    _clean_and_at(repo, git(repo, "rev-parse", "main"))


def _half_written(repo: Path) -> tuple[str, str]:
    """The state a kill inside `git read-tree -u` leaves: the intent recorded, some files written."""
    _agent_with_many_files(repo)
    old, new = git(repo, "rev-parse", "main"), git(repo, "rev-parse", "adw/big")
    # What Grove records before it touches a file; then half the files as the killed run wrote them.
    (repo / ".git" / "grove-fast-forward.json").write_text(json.dumps({"branch": "main", "old": old, "new": new}))
    for i in range(0, MANY, 2):
        (repo / f"f{i:03}.txt").write_text(git(repo, "show", f"{new}:f{i:03}.txt") + "\n")
    return old, new


def test_files_a_killed_checkout_already_wrote_are_taken_as_written(repo):
    old, new = _half_written(repo)
    assert doctor(repo, "--fix")["healthy"]
    _clean_and_at(repo, new)
    assert all((repo / f"f{i:03}.txt").exists() for i in range(MANY))


def test_an_edit_made_after_the_crash_is_never_overwritten(repo):
    old, new = _half_written(repo)
    (repo / "f001.txt").write_text("the user's own edit\n")  # a file the merge changes, edited meanwhile
    report = doctor(repo, "--fix")
    assert not report["healthy"] and report["problems"][0]["kind"] == "interrupted_fast_forward"
    assert "f001.txt" in report["problems"][0]["hint"]
    assert (repo / "f001.txt").read_text() == "the user's own edit\n"
    assert git(repo, "rev-parse", "main") == old, "nothing moved"
    # Once the user moves the edit aside, the fast-forward finishes.
    (repo / "f001.txt").unlink()
    assert doctor(repo, "--fix")["healthy"]
    _clean_and_at(repo, new)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_merge_interrupted_at_a_random_moment_converges(repo, sig):
    """A real signal to the whole process group (Grove and its git), wherever it lands."""
    _agent_with_many_files(repo)
    before = git(repo, "rev-parse", "main")
    run = subprocess.Popen([*cli(), "merge", "--adw-id", "big"], cwd=repo, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_the_fast_forward_to_start(repo, run)
    os.killpg(run.pid, sig)
    run.wait(timeout=120)
    again = inv(repo, "merge", "--adw-id", "big", "--json")
    assert again.returncode == 0, again.stderr
    main = git(repo, "rev-parse", "main")
    assert main != before and git(repo, "merge-base", "--is-ancestor", "adw/big", main) == ""
    _clean_and_at(repo, main)


def _wait_for_the_fast_forward_to_start(repo: Path, run: subprocess.Popen) -> None:
    """Until Grove records its intent or writes a file (bounded; a run that ends first is fine too)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if (repo / ".git" / "grove-fast-forward.json").exists() or (repo / "f000.txt").exists():
            return
        time.sleep(0.002)
