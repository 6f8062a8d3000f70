"""A pool that stays warm while main moves (issue 24): entries follow the base in the pool, not in
an agent's setup, on real repositories. Counts and states, never times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GROVE, cli, commit_file, git, inv, inv_json
from test_pool import light, pool_entries

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.resources import deps  # noqa: E402


def counting_resets(repo: Path, log: Path) -> dict:
    """The db reset appends a line to ``log`` each time it runs (the env reaches the script)."""
    commit_file(repo, "scripts/reset_db.sh", '#!/bin/sh\nmkdir -p data && date > data/app.db\necho reset >> "$RESET_LOG"\n')
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "commit", "-q", "-am", "reset script counts")
    git(repo, "push", "-q", "origin", "main")
    return {"RESET_LOG": str(log)}


def resets(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def base_moves(repo: Path, name: str = "README.md", text: str = "main moved\n") -> str:
    commit_file(repo, name, text)
    git(repo, "push", "-q", "origin", "main")
    return git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("db_inputs, resets_after", [("", 4), ("scripts/reset_db.sh,db", 2)])
def test_a_refresh_brings_ready_entries_to_the_newest_base(repo, tmp_path, db_inputs, resets_after):
    log = tmp_path / "resets.log"
    env = {**counting_resets(repo, log), "ADW_DB_INPUTS": db_inputs}
    inv_json(repo, "pool", "--size", "2", env=env)
    assert resets(log) == 2
    new = base_moves(repo)
    refreshed = inv_json(repo, "pool", "--size", "2", env=env)
    assert len(refreshed["refreshed"]) == 2 and refreshed["created"] == []
    assert {e["commit"] for e in pool_entries(repo).values()} == {new}
    assert {e["status"] for e in pool_entries(repo).values()} == {"ready"}
    assert resets(log) == resets_after, "the database is reset again only when its inputs changed"
    # The take is now at the floor: no checkout of changed files, no reinstall, no reseed.
    out = inv(repo, "setup", "--adw-id", "t1", "--json", env=env, check=True)
    s = json.loads(out.stdout)
    assert s["from_pool"] and s["base_commit"] == new and "(at the base)" in out.stderr
    assert s["steps"]["db"]["outcome"] == "kept" and resets(log) == resets_after
    wt = Path(s["worktree_path"])
    assert git(wt, "rev-parse", "HEAD") == new and git(wt, "status", "--porcelain") == ""
    assert (wt / "README.md").read_text() == "main moved\n"


def test_an_entry_someone_worked_in_is_kept_and_never_refreshed_over(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    entry = next(iter(pool_entries(repo).values()))
    (Path(entry["path"]) / "notes.txt").write_text("someone's work\n")
    old = entry["commit"]
    base_moves(repo)
    out = inv(repo, "pool", "--size", "1", "--json")
    assert out.returncode == 1, "kept entries mean the pool did not reach its size"
    kept = pool_entries(repo)[entry["name"]]
    assert kept["status"] == "kept" and "notes.txt" in kept["reason"] and kept["commit"] == old
    assert (Path(entry["path"]) / "notes.txt").read_text() == "someone's work\n"
    assert git(Path(entry["path"]), "rev-parse", "HEAD") == old


def test_a_lock_file_changed_between_the_fill_and_the_refresh_reinstalls_in_the_pool(tmp_path, repo):
    app = sample_app.build(tmp_path / "plain", deps.find_tool("uv"), deps.find_tool("bun"))
    inv_json(app, "pool", "--size", "1")
    pkg = json.loads((app / "app/client/package.json").read_text())
    pkg["version"] = "0.2.0"
    (app / "app/client/package.json").write_text(json.dumps(pkg))
    git(app, "commit", "-q", "-am", "client version")
    git(app, "push", "-q", "origin", "main")
    out = inv(app, "pool", "--size", "1", "--json", check=True)
    assert "reinstalled app/client" in out.stderr and "app/server" not in out.stderr.split("reinstalled")[1]
    taken = inv(app, "setup", "--adw-id", "l1", "--json", check=True)
    assert json.loads(taken.stdout)["steps"]["install"]["outcome"] == "kept" and "reinstall: none" in taken.stderr


@pytest.mark.parametrize("point", ["pool:before:refresh", "pool:after:refresh"])
def test_a_refresh_killed_at_a_crash_point_converges(repo, point):
    light(repo)
    inv_json(repo, "pool", "--size", "2")
    new = base_moves(repo, "src/app.txt", "new code\n")
    killed = inv(repo, "pool", "--size", "2", env={"GROVE_FAULT": point})
    assert killed.returncode == -signal.SIGKILL
    assert any(e["status"] == "refreshing" for e in pool_entries(repo).values())
    _converges(repo, new)


def test_a_refresh_killed_at_a_random_moment_converges(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "2")
    for i in range(150):  # enough changed files that the kill can land inside the checkout
        (repo / f"src/f{i}.txt").parent.mkdir(exist_ok=True)
        (repo / f"src/f{i}.txt").write_text(f"{i}\n" * 50)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "many files")
    git(repo, "push", "-q", "origin", "main")
    new = git(repo, "rev-parse", "HEAD")
    run = subprocess.Popen([*cli(), "pool", "--size", "2"], cwd=repo, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None \
            and not any(e["status"] == "refreshing" for e in _entries_quietly(repo)):
        time.sleep(0.002)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    _converges(repo, new)


def _entries_quietly(repo: Path) -> list[dict]:
    try:
        return list(pool_entries(repo).values())
    except ValueError:  # read mid-replace cannot happen (atomic writes), but be safe
        return []


def _converges(repo: Path, new: str) -> None:
    """doctor --fix finishes the refresh; every entry is ready at the new base, clean; a take works."""
    report = json.loads(inv(repo, "doctor", "--fix", "--json").stdout)
    assert report["healthy"], report["problems"]
    entries = pool_entries(repo).values()
    assert entries and {(e["status"], e["commit"]) for e in entries} == {("ready", new)}
    for e in entries:
        assert git(Path(e["path"]), "status", "--porcelain") == ""
    s = inv_json(repo, "setup", "--adw-id", "after")
    wt = Path(s["worktree_path"])
    assert s["from_pool"] and git(wt, "rev-parse", "HEAD") == new and git(wt, "status", "--porcelain") == ""


def test_a_take_never_gets_an_entry_being_refreshed(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        path = repo / "agents/.grove/pool.json"
        data = json.loads(path.read_text())
        (entry,) = data["entries"].values()
        entry.update(status="refreshing", pid=holder.pid, refresh_to=entry["commit"])
        path.write_text(json.dumps(data))
        s = inv_json(repo, "setup", "--adw-id", "r1")
        assert not s["from_pool"], "an entry a live process is refreshing is nobody's to take"
        assert pool_entries(repo)[entry["name"]]["status"] == "refreshing"
    finally:
        holder.kill()
        holder.wait()


def test_takes_racing_refreshes_only_get_whole_entries(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "3")
    for round_ in range(3):
        new = base_moves(repo, f"src/r{round_}.txt", f"round {round_}\n")
        refresh = subprocess.Popen([*cli(), "pool", "--size", "3"], cwd=repo, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        s = inv_json(repo, "setup", "--adw-id", f"race{round_}")
        assert refresh.wait(timeout=120) in (0, 1)
        wt = Path(s["worktree_path"])
        assert git(wt, "rev-parse", "HEAD") == s["base_commit"] == new
        assert git(wt, "status", "--porcelain") == "" and (wt / f"src/r{round_}.txt").read_text() == f"round {round_}\n"
    assert inv(repo, "doctor").returncode == 0


def _wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _all_ready_at(repo: Path, commit: str) -> bool:
    entries = _entries_quietly(repo)
    return bool(entries) and all(e["status"] == "ready" and e["commit"] == commit for e in entries)


def test_a_setup_that_finds_the_base_moved_refreshes_the_pool_in_the_background(repo):
    light(repo)
    auto = {"ADW_POOL_REFRESH": "auto"}
    inv_json(repo, "pool", "--size", "3", env=auto)
    new = base_moves(repo)
    s = inv_json(repo, "setup", "--adw-id", "bg1", env=auto)
    assert s["from_pool"] and s["base_commit"] == new
    _wait_for(lambda: len(_entries_quietly(repo)) == 3 and _all_ready_at(repo, new), "the background refresh")


def test_a_merge_that_moves_the_base_refreshes_the_pool_in_the_background(repo):
    light(repo)
    auto = {"ADW_POOL_REFRESH": "auto"}
    wt = Path(inv_json(repo, "setup", "--adw-id", "m1", "--no-pool", env=auto)["worktree_path"])
    commit_file(wt, "feature.txt", "agent work\n")
    inv(repo, "status", "--adw-id", "m1", "--set", "completed", check=True)
    inv_json(repo, "pool", "--size", "1", env=auto)
    summary = inv_json(repo, "merge", "--adw-id", "m1", "--push", env=auto)
    _wait_for(lambda: _all_ready_at(repo, summary["base_after"]), "the background refresh after the merge")


def test_pool_follow_runs_rounds_and_stops_when_asked(repo):
    light(repo)
    done = inv_json(repo, "pool", "--size", "1", "--follow", "--interval", "0.1", "--rounds", "2")
    assert done["rounds"] == 2 and len(pool_entries(repo)) == 1
    # Output to a file, not a pipe: a git child of a round (an auto gc) may keep a pipe open after
    # Grove exits, and the test would then wait on it instead of on Grove.
    out_file = repo.parent / "follow.json"
    with open(out_file, "w") as out:
        run = subprocess.Popen([*cli(), "pool", "--follow", "--interval", "0.2", "--json"], cwd=repo,
                               stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        new = base_moves(repo)
        _wait_for(lambda: _all_ready_at(repo, new), "--follow to refresh the entry")
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=120) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert json.loads(out_file.read_text())["rounds"] >= 1


@pytest.mark.parametrize("flags", [["--interval", "nan"], ["--interval", "-1"], ["--interval", "0"],
                                   ["--rounds", "-1"], ["--rounds", "x"]])
def test_pool_follow_refuses_bad_numbers_and_changes_nothing(repo, flags):
    out = inv(repo, "pool", "--size", "1", "--follow", *flags)
    assert out.returncode == 2 and not (repo / "agents").exists()


def test_a_refresh_in_progress_is_seen_as_alive_and_never_resumed_by_another_process(repo, monkeypatch):
    """The claim stamps the refresher's pid with its start time: with the fill's start time left
    beside the new pid, a running refresh looked dead, and a second `grove pool` or doctor --fix
    would have resumed it under the first one's feet."""
    from grove.core import liveness
    from grove.core.report import Reporter
    from grove.ops import pool
    from conftest import settings_for

    light(repo)
    inv(repo, "pool", "--size", "1", "--quiet", check=True)
    new = base_moves(repo)
    settings = settings_for(repo)
    seen = []

    def look(settings, name, report, **kw):
        entry = pool.read(settings)["entries"][name]
        seen.append((entry["status"], liveness.holder_alive(entry), pool.check(settings, False)))
        return "looked only"

    monkeypatch.setattr(pool, "_refresh_entry", look)
    pool.refresh(settings, "main", new, Reporter(quiet=True))
    [(status, alive, problems)] = seen
    assert status == "refreshing" and alive and problems == []  # nothing for doctor --fix to resume


def test_a_refresh_killed_after_writing_a_file_both_commits_hold_converges(repo):
    """The resumed refresh compares each file with both commits through a copy of the entry's index
    (`read-tree -m`, keeping stat info). Without `-i`, git refused the whole read for a file the new
    commit changes that was no longer as the index had it ("not uptodate. Cannot merge"), the very
    file the killed checkout had written, and doctor --fix failed on every run (found by a review)."""
    light(repo)
    commit_file(repo, "a.txt", "old a\n")
    git(repo, "push", "-q", "origin", "main")
    inv_json(repo, "pool", "--size", "1")
    commit_file(repo, "a.txt", "new a\n")
    git(repo, "push", "-q", "origin", "main")
    new = git(repo, "rev-parse", "HEAD")
    assert inv(repo, "pool", "--size", "1", env={"GROVE_FAULT": "pool:before:refresh"}).returncode == -signal.SIGKILL
    (entry,) = pool_entries(repo).values()
    (Path(entry["path"]) / "a.txt").write_text("new a\n")  # as the killed checkout wrote it
    inv(repo, "doctor", "--fix", "--json")
    _converges(repo, new)
