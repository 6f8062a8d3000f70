"""The event stream agents/.grove/events.jsonl and `grove events` (issue 22, item 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import LIB, cli, commit_file, git, inv, inv_json, settings_for

from grove.core import events


def stream(repo):
    return [json.loads(line) for line in (repo / "agents/.grove/events.jsonl").read_text().splitlines()]


def test_a_whole_lifecycle_writes_one_line_per_change(repo):
    inv(repo, "setup", "--adw-id", "ev1", "--no-install", check=True)
    inv(repo, "status", "--adw-id", "ev1", "--set", "in_progress", "--agent-id", "bot", check=True)
    commit_file(repo / "trees/ev1", "a.txt", "a\n")
    inv(repo, "status", "--adw-id", "ev1", "--set", "completed", check=True)
    inv(repo, "merge", "--adw-id", "ev1", check=True)
    (repo / "trees/ev1/scratch.txt").write_text("uncommitted\n")  # after the merge: a merge skips it (issue 20)
    inv(repo, "teardown", "--adw-id", "ev1", "--force", check=True)
    lines = stream(repo)
    assert [(e["event"], e["from"], e["to"]) for e in lines] == [
        ("created", None, "created"),
        ("status", "created", "in_progress"),
        ("status", "in_progress", "completed"),
        ("merged", "completed", "merged"),
        ("salvaged", None, None),
        ("cleaned", "merged", "cleaned"),
        ("archived", "cleaned", None),
        ("torn_down", "merged", "cleaned"),
    ]
    assert all(e["adw_id"] == "ev1" and e["time"].endswith("Z") for e in lines)
    assert all(isinstance(e["by"]["pid"], int) and e["by"]["command"] for e in lines)
    assert "setup" in lines[0]["by"]["command"] and lines[0]["details"]["branch"] == "adw/ev1"
    assert lines[0]["details"]["ports"]["BACKEND_PORT"]
    assert lines[1]["details"]["agent"] == "bot"
    assert lines[3]["details"]["merged_commit"]
    assert lines[4]["details"]["ref"].startswith("refs/grove-salvage/ev1/")
    assert lines[6]["details"]["archive"].endswith(".json")
    assert lines[7]["details"]["branch"] == "adw/ev1"
    # The reader: the same lines as one JSON document, filtered by agent and time.
    assert inv_json(repo, "events") == lines
    assert inv_json(repo, "events", "--adw-id", "other") == []
    assert inv_json(repo, "events", "--since", lines[3]["time"]) == lines[3:]
    assert inv_json(repo, "events", "--since", "1h") == lines
    bad = inv(repo, "events", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr and bad.stdout == ""
    for bad in ("soon", "nan", "-1"):  # nan reached time.sleep() and ended in a traceback
        slow = inv(repo, "events", "--follow", "--interval", bad)
        assert slow.returncode == 2 and "--interval" in slow.stderr and slow.stdout == "", bad


def test_a_conflict_and_a_failure_are_events_with_their_reason(repo):
    inv(repo, "setup", "--adw-id", "ev2", "--no-install", check=True)
    inv(repo, "status", "--adw-id", "ev2", "--set", "failed", "--error", "tests red", check=True)
    last = stream(repo)[-1]
    assert (last["event"], last["to"], last["details"]["error"]) == ("status", "failed", "tests red")
    human = inv(repo, "events", check=True).stdout
    assert "ev2" in human and "created -> failed" in human


def test_follow_sees_a_line_another_process_appends(repo):
    inv(repo, "setup", "--adw-id", "ev3", "--no-install", check=True)
    first = stream(repo)[0]
    follower = subprocess.Popen([*cli(), "events", "--follow", "--json", "--since", first["time"], "--interval", "0.1"],
                                cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(follower.stdout.readline()) == first  # the replay of --since
        # Another process (a status change from the Python API) appends while the follow runs.
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from grove import worktree_manager as wm; "
                "wm.update_worktree_status('ev3', 'in_progress', project_root=sys.argv[2], agent_id='other')")
        subprocess.run([sys.executable, "-c", code, str(LIB), str(repo)], check=True, timeout=60)
        seen = json.loads(follower.stdout.readline())
        assert (seen["adw_id"], seen["event"], seen["to"], seen["details"]["agent"]) == \
            ("ev3", "status", "in_progress", "other")
        assert seen["by"]["pid"] != follower.pid
        follower.send_signal(signal.SIGTERM)  # ends the follow cleanly at its next poll
        assert follower.wait(timeout=30) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.communicate(timeout=30)


def test_the_stream_rotates_at_its_size_and_loses_no_line(repo, monkeypatch):
    settings = settings_for(repo)
    monkeypatch.setattr(events, "ROTATE_BYTES", 2000)
    for i in range(40):
        events.emit(settings, "status", f"r{i}", "created", "in_progress", n=i)
    current = repo / "agents/.grove/events.jsonl"
    assert current.stat().st_size <= 2000 and current.with_name("events.jsonl.1").exists()
    kept = [e["details"]["n"] for e in events.read(settings)]
    assert kept == sorted(kept) and kept[-1] == 39  # the newest lines, in order, none torn
    assert oct(current.stat().st_mode & 0o777) == "0o600"


def test_concurrent_writers_never_tear_a_line(repo):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from grove.core import config, events; "
            "s = config.load({'repo': sys.argv[2]}); "
            "[events.emit(s, 'status', 'w' + sys.argv[3], 'a', 'b', pad='x' * 3000, n=i) for i in range(50)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(LIB), str(repo), str(w)]) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    lines = stream(repo)
    assert len(lines) == 200 and {e["adw_id"] for e in lines} == {"w0", "w1", "w2", "w3"}


def test_a_restored_salvage_is_an_event(repo):
    inv(repo, "setup", "--adw-id", "ev4", "--no-install", check=True)
    (repo / "trees/ev4/draft.txt").write_text("work\n")
    ref = inv_json(repo, "teardown", "--adw-id", "ev4", "--force")["salvage_ref"]
    inv(repo, "setup", "--adw-id", "ev4", "--no-install", check=True)
    inv(repo, "salvage", "--adw-id", "ev4", "--restore", ref, check=True)
    last = stream(repo)[-1]
    assert (last["event"], last["adw_id"], last["details"]) == ("restored", "ev4", {"ref": ref, "files": 1})


def test_a_setup_rolled_back_says_so_after_its_created_line(repo):
    script = repo / "scripts/reset_db.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    script.chmod(0o755)
    git(repo, "add", "scripts/reset_db.sh")
    git(repo, "commit", "-qm", "a failing reset script")
    git(repo, "push", "-q", "origin", "main")
    out = inv(repo, "setup", "--adw-id", "ev5", "--no-install")
    assert out.returncode == 1 and not (repo / "agents/ev5").exists()
    kinds = [(e["event"], e["from"], e["to"]) for e in stream(repo)]
    assert kinds == [("created", None, "created"), ("rolled_back", "created", None)]
    assert stream(repo)[-1]["details"]["step"] == "db"


def test_follow_reads_across_rotations_without_missing_or_repeating_a_line(repo, monkeypatch):
    settings = settings_for(repo)
    monkeypatch.setattr(events, "ROTATE_BYTES", 600)  # a rotation every few lines
    stream_ = events.follow(settings, since=0.0, interval=0.05)
    for i in range(30):
        events.emit(settings, "status", "rot", "a", "b", n=i)
        assert next(stream_)["details"]["n"] == i
    assert (repo / "agents/.grove/events.jsonl.1").exists()
    stream_.close()


def test_the_documented_event_shape_is_the_real_one(repo):
    from test_docs import doc

    inv(repo, "setup", "--adw-id", "ev6", "--no-install", check=True)
    documented = doc("## `grove events --json`")[0]
    real = inv_json(repo, "events")[0]
    assert set(real) == set(documented) and set(real["by"]) == set(documented["by"])
