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


# -- sync (issue 20, item 6) --------------------------------------------------------------------

from test_merge_queue import mcp_repo  # noqa: E402,F401  (the fixture: a tracked .mcp.json setup hides)


def _base_moves_with_many_files(repo: Path) -> None:
    for i in range(MANY):
        (repo / f"b{i:03}.txt").write_text(f"base {i}\n" * 20)
    mcp = json.loads((repo / ".mcp.json").read_text())
    mcp["mcpServers"]["db"] = {"command": "./bin/db-mcp"}
    (repo / ".mcp.json").write_text(json.dumps(mcp, indent=2) + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the base moves: many files and the hidden config")


def _synced_and_clean(repo: Path, wt: Path) -> None:
    assert git(repo, "merge-base", "--is-ancestor", "main", "adw/sk") == ""
    assert git(wt, "status", "--porcelain") == "", "clean, Grove's files hidden again"
    assert git(wt, "ls-files", "-v", ".mcp.json").startswith("S ")
    assert "db-mcp" in (wt / ".mcp.json").read_text() and str(wt) in (wt / ".mcp.json").read_text()
    assert not list(git_dir_of(wt).glob("grove-sync*")) and not (git_dir_of(wt) / "index.lock").exists()
    assert (wt / "mine.txt").read_text() == "1\n"
    commit_file(wt, "after.txt", "the agent can commit\n")


def git_dir_of(wt: Path) -> Path:
    return Path(git(wt, "rev-parse", "--absolute-git-dir"))


@pytest.mark.parametrize("strategy", ["merge", "rebase"])
def test_a_sync_killed_after_git_finished_is_completed_by_a_rerun(mcp_repo, strategy):
    repo = mcp_repo
    wt = agent(repo, "sk", {"mine.txt": "1\n"}, status="in_progress")
    _base_moves_with_many_files(repo)
    killed = inv(repo, "sync", "--adw-id", "sk", "--strategy", strategy, env={"GROVE_FAULT": "sync:after:merge"})
    assert killed.returncode == -signal.SIGKILL
    assert [p["kind"] for p in doctor(repo)["problems"]] == ["interrupted_sync"]
    result = inv_json(repo, "sync", "--adw-id", "sk", "--strategy", strategy)
    assert result["recovered"]["outcome"] == "finished" and result["outcome"] == "up_to_date"
    _synced_and_clean(repo, wt)


@pytest.mark.parametrize("strategy", ["merge", "rebase"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_sync_interrupted_at_a_random_moment_converges(mcp_repo, strategy, sig):
    repo = mcp_repo
    wt = agent(repo, "sk", {"mine.txt": "1\n"}, status="in_progress")
    git(wt, "commit", "-q", "--allow-empty", "-m", "a second agent commit, for the rebase to replay")
    _base_moves_with_many_files(repo)
    run = subprocess.Popen([*cli(), "sync", "--adw-id", "sk", "--strategy", strategy], cwd=repo,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None and not (git_dir_of(wt) / "grove-sync.json").exists():
        time.sleep(0.002)
    os.killpg(run.pid, sig)
    run.wait(timeout=120)
    again = inv(repo, "sync", "--adw-id", "sk", "--strategy", strategy, "--json")
    assert again.returncode == 0, again.stderr
    _synced_and_clean(repo, wt)


def test_doctor_fix_rolls_back_a_sync_killed_before_git_finished(mcp_repo):
    repo = mcp_repo
    wt = agent(repo, "sk", {"mine.txt": "1\n"}, status="in_progress")
    head = git(wt, "rev-parse", "HEAD")
    _base_moves_with_many_files(repo)
    # The state a kill inside `git merge` leaves: the intent, git's MERGE_HEAD, some of the base's files.
    admin = git_dir_of(wt)
    (admin / "grove-sync.json").write_text(json.dumps({"head_before": head, "tip": git(repo, "rev-parse", "main"),
                                                       "strategy": "merge", "branch": "adw/sk"}))
    (admin / "MERGE_HEAD").write_text(git(repo, "rev-parse", "main") + "\n")
    for i in range(0, MANY, 3):
        (wt / f"b{i:03}.txt").write_text(f"base {i}\n" * 20)
    (wt / "b001.txt").write_text("the agent wrote this after the crash\n")
    report = doctor(repo, "--fix")
    assert report["healthy"], report
    recovered = report["problems"][0]["recovered"]
    assert recovered["outcome"] == "rolled_back" and recovered["salvage_ref"]
    assert git(wt, "rev-parse", "HEAD") == head and git(wt, "status", "--porcelain") == "?? b001.txt"
    assert not (wt / "b000.txt").exists(), "the base's own files go: git gives them back"
    assert (wt / "b001.txt").exists(), "a file git cannot give back stays (and is salvaged)"
    assert "after the crash" in git(repo, "show", f"{recovered['salvage_ref']}:b001.txt")
    assert git(wt, "ls-files", "-v", ".mcp.json").startswith("S ")


@pytest.mark.parametrize("strategy", ["merge", "rebase"])
def test_sync_never_overwrites_an_ignored_file_the_base_starts_tracking(repo, strategy):
    """Issue 20, item 2: the base force-adds fixtures/local.db, which the agent has as an ignored file."""
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "*.db\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore databases")
    wt = agent(repo, "ig", {"mine.txt": "1\n"}, status="in_progress")
    (wt / "fixtures").mkdir()
    (wt / "fixtures" / "local.db").write_bytes(b"the agent's rows")
    (repo / "fixtures").mkdir()
    (repo / "fixtures" / "local.db").write_bytes(b"the base's fixture")
    git(repo, "add", "-f", "fixtures/local.db")
    git(repo, "commit", "-q", "-m", "track a fixture database")
    head = git(wt, "rev-parse", "HEAD")
    out = inv(repo, "sync", "--adw-id", "ig", "--strategy", strategy)
    assert out.returncode == 1 and "fixtures/local.db" in out.stderr and "nothing changed" in out.stderr
    assert (wt / "fixtures" / "local.db").read_bytes() == b"the agent's rows"
    assert git(wt, "rev-parse", "HEAD") == head and git(wt, "status", "--porcelain") == ""
    # Moved aside, the sync goes through.
    (wt / "fixtures" / "local.db").rename(wt / "mine.db")
    assert inv_json(repo, "sync", "--adw-id", "ig", "--strategy", strategy)["outcome"] in ("merged", "rebased")
