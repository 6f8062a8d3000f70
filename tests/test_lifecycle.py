"""Lifecycle, queries, doctor, gc and the seed's Python API (issue 3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import LIB, commit_file, git, inv, inv_json, settings_for, port_leases

from grove.ops import chain
from grove.core import git as grove_git, state
from grove import worktree_manager as wm
from grove.core.errors import GroveError
from grove.core.report import Reporter


def make_agent(repo, adw_id, **kw):
    chain.setup(settings_for(repo), chain.Request(adw_id, install=False, db=False, **kw), Reporter(quiet=True))
    return repo / "trees" / adw_id


@pytest.mark.parametrize("current", state.STATUSES)
def test_every_transition_allowed_or_refused(current):
    for target in state.STATUSES:
        doc = {"status": current, "history": [], "agent_id": None}
        allowed = target == current or target in state.TRANSITIONS[current]
        if allowed:
            state.apply_status(doc, target, by="t")
            assert doc["status"] == target and doc["history"][-1]["status"] == target
            if target in state.STAMPS:
                assert doc[state.STAMPS[target]]
        else:
            with pytest.raises(GroveError) as err:
                state.apply_status(doc, target)
            assert err.value.code == 2 and f"cannot go from {current} to {target}" in err.value.message


def test_bad_transition_via_inv_exits_2_and_names_allowed(repo):
    make_agent(repo, "s1")
    inv(repo, "status", "--adw-id", "s1", "--set", "completed", check=True)
    inv(repo, "status", "--adw-id", "s1", "--set", "merged", check=True)
    out = inv(repo, "status", "--adw-id", "s1", "--set", "in_progress")
    assert out.returncode == 2 and "cannot go from merged to in_progress" in out.stderr and "cleaned" in out.stderr
    shown = inv_json(repo, "status", "--adw-id", "s1")
    assert [h["status"] for h in shown["history"]] == ["created", "completed", "merged"]
    assert shown["merged_at"] and shown["completed_at"]


def test_twenty_processes_updating_one_state_lose_nothing(repo):
    make_agent(repo, "busy")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from grove import worktree_manager as wm; "
            "wm.update_worktree_status('busy', 'in_progress', project_root=sys.argv[2], agent_id=sys.argv[3])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(LIB), str(repo), f"agent-{i}"]) for i in range(20)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 20
    history = json.loads((repo / "agents/busy/adw_state.json").read_text())["history"]
    assert sorted(h["by"] for h in history if h["by"].startswith("agent-")) == sorted(f"agent-{i}" for i in range(20))


def test_two_threads_inside_one_state_update_both_land(repo):
    """Issue 25, the state lock from another angle: one update is held inside its change until a
    second one has had every chance to start; the lock must keep the second out until the first is
    written, so neither is lost (without it, the second is inside at once and the first overwrites it)."""
    import threading

    make_agent(repo, "tw")
    settings = settings_for(repo)
    first_inside, second_inside = threading.Event(), threading.Event()

    def first(s):
        first_inside.set()
        second_inside.wait(timeout=2)  # the grace for a second update to (wrongly) come in
        s["agent_id"] = "first"

    def second(s):
        second_inside.set()
        s["task_name"] = "second"

    thread = threading.Thread(target=state.update, args=(settings, "tw", first))
    thread.start()
    try:
        assert first_inside.wait(timeout=60)
        state.update(settings, "tw", second)
    finally:
        thread.join(timeout=60)
    final = state.load(settings, "tw")
    assert (final["agent_id"], final["task_name"]) == ("first", "second"), "both updates landed"


def test_commits_follow_the_branch_on_status_change(repo):
    wt = make_agent(repo, "cm")
    first = commit_file(wt, "a.txt", "a\n")
    second = commit_file(wt, "b.txt", "b\n")
    s = state.set_status(settings_for(repo), "cm", "completed")
    assert s["commits"] == [first, second]


def test_list_filters_and_orders_most_recent_first(repo):
    make_agent(repo, "l1", epic_id="E1", task_name="one")
    time.sleep(1.1)
    make_agent(repo, "l2", epic_id="E1", task_name="two")
    make_agent(repo, "l3", epic_id="E2", task_name="three")
    state.set_status(settings_for(repo), "l1", "completed")
    assert [r["adw_id"] for r in inv_json(repo, "list", "--epic", "E1")] == ["l2", "l1"]
    assert [r["adw_id"] for r in inv_json(repo, "list", "--status", "completed")] == ["l1"]
    rows = inv_json(repo, "list")
    assert all(r["git"] and r["exists"] for r in rows)
    gw = inv_json(repo, "git-worktrees")
    assert {w["branch"] for w in gw} >= {"main", "feature/E1/one-l1", "feature/E1/two-l2"}


def test_teardown_refuses_live_status_but_conflict_is_cleanable(repo):
    make_agent(repo, "t1")
    state.set_status(settings_for(repo), "t1", "in_progress")
    assert inv(repo, "teardown", "--adw-id", "t1").returncode == 2
    make_agent(repo, "t2")
    state.set_status(settings_for(repo), "t2", "completed")
    state.set_status(settings_for(repo), "t2", "conflict", error="conflict in x")
    inv(repo, "teardown", "--adw-id", "t2", check=True)
    archived = inv_json(repo, "list", "--archived")
    assert [a["adw_id"] for a in archived] == ["t2"] and archived[0]["status"] == "cleaned"


def test_teardown_of_several_ids_checks_them_all_first_and_exits_2_only_when_nothing_changed(repo):
    for adw_id in ("m1", "m2", "m3"):
        make_agent(repo, adw_id)
    for adw_id in ("m1", "m2"):
        state.set_status(settings_for(repo), adw_id, "completed")
    state.set_status(settings_for(repo), "m3", "in_progress")
    unknown = inv(repo, "teardown", "--adw-id", "m1", "--adw-id", "nosuch", "--json")
    assert unknown.returncode == 2 and "nosuch" in unknown.stdout
    assert (repo / "trees/m1").is_dir(), "an unknown id among several tears nothing down"
    out = inv(repo, "teardown", "--adw-id", "m1", "--adw-id", "m3", "--adw-id", "m2", "--json")
    doc = json.loads(out.stdout)
    assert [r["adw_id"] for r in doc["torn_down"]] == ["m1", "m2"]
    assert [(e["adw_id"], e["exit_code"]) for e in doc["errors"]] == [("m3", 2)]  # its own refusal
    assert out.returncode == 1, "m1 and m2 were torn down: the call must not say 'nothing changed'"
    assert (repo / "trees/m3").is_dir() and not (repo / "trees/m1").exists()


def test_cleanup_epic_counts_and_keeps_unmerged_branches(repo):
    for i in (1, 2, 3):
        make_agent(repo, f"e{i}", epic_id="EP", task_name=f"t{i}")
    commit_file(repo / "trees/e1", "work.txt", "unmerged\n")
    for i in (1, 2):
        state.set_status(settings_for(repo), f"e{i}", "completed")
    result = inv_json(repo, "cleanup-epic", "--epic", "EP", "--delete-branches")
    assert result["count"] == 2 and [k["adw_id"] for k in result["kept"]] == ["e3"]
    assert "feature/EP/t1-e1" in git(repo, "branch"), "unmerged: kept"
    assert "feature/EP/t2-e2" not in git(repo, "branch"), "merged (no commits): deleted"


def _age(repo, adw_id, days):
    """Make an agent look idle for ``days``: state, files (the branch's commit dates are pinned old)."""
    path = repo / "agents" / adw_id / "adw_state.json"
    s = json.loads(path.read_text())
    old = time.time() - days * 86400
    s["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old))
    path.write_text(json.dumps(s))
    for dirpath, dirs, files in os.walk(repo / "trees" / adw_id):
        for name in files + dirs:
            os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
    os.utime(repo / "trees" / adw_id, (old, old))


def test_gc_removes_abandoned_and_keeps_their_commits(repo):
    wt = make_agent(repo, "old")
    tip = commit_file(wt, "unmerged.txt", "precious\n")
    make_agent(repo, "fresh")
    _age(repo, "old", 30)
    dry = inv_json(repo, "gc", "--max-age-days", "7", "--dry-run")
    assert [a["adw_id"] for a in dry["abandoned"]] == ["old"] and wt.exists()
    result = inv_json(repo, "gc", "--max-age-days", "7")
    assert [a["adw_id"] for a in result["removed"]] == ["old"]
    assert not wt.exists() and (repo / "trees/fresh").exists()
    assert git(repo, "rev-parse", "adw/old") == tip, "the unmerged commit stays reachable"


def test_gc_counts_file_activity_not_creation_age(repo):
    make_agent(repo, "active")
    _age(repo, "active", 30)
    (repo / "trees/active/new-work.txt").write_text("touched today\n")
    assert inv_json(repo, "gc", "--max-age-days", "7", "--dry-run")["abandoned"] == []


def test_squash_merged_branch_is_recognised_as_merged(repo):
    wt = make_agent(repo, "sq")
    commit_file(wt, "one.txt", "1\n")
    commit_file(wt, "two.txt", "2\n")
    git(repo, "merge", "--squash", "adw/sq")
    git(repo, "commit", "-q", "-m", "squashed by hand")
    assert not grove_git.ok(repo, "merge-base", "--is-ancestor", "adw/sq", "main")
    assert grove_git.is_merged(repo, "adw/sq", "main")
    wt2 = make_agent(repo, "nm")
    commit_file(wt2, "three.txt", "3\n")
    assert not grove_git.is_merged(repo, "adw/nm", "main")


# -- doctor: every troubleshooting case of the seed ------------------------------------------


def doctor(repo, *flags):
    out = inv(repo, "doctor", "--json", *flags)
    return out.returncode, json.loads(out.stdout)


def test_doctor_healthy_repo(repo):
    make_agent(repo, "h1")
    code, report = doctor(repo)
    assert code == 0 and report["healthy"] and report["problems"] == [] and report["fixed"] == 0


def test_doctor_directory_without_git(repo):
    (repo / "trees" / "stray").mkdir(parents=True)
    (repo / "trees" / "stray" / "notes.txt").write_text("someone's files\n")
    code, report = doctor(repo)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["unknown_directory"]
    code, report = doctor(repo, "--fix")
    assert code == 0 and report["fixed"] == 1
    moved = report["problems"][0]["moved_to"]
    assert (repo / "agents/.archive" / os.path.basename(moved) / "notes.txt").exists(), "moved, never deleted"
    assert doctor(repo)[0] == 0


def test_doctor_git_without_directory(repo):
    wt = make_agent(repo, "gone")
    tip = commit_file(wt, "w.txt", "w\n")
    shutil.rmtree(wt)
    code, report = doctor(repo)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["directory_gone"]
    assert doctor(repo, "--fix")[0] == 0
    assert str(wt) not in git(repo, "worktree", "list", "--porcelain")
    assert git(repo, "rev-parse", "adw/gone") == tip and doctor(repo)[0] == 0


def test_doctor_metadata_out_of_sync(repo):
    wt = make_agent(repo, "sync")
    git(repo, "worktree", "remove", "--force", str(wt))
    code, report = doctor(repo)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["orphaned_state"]
    assert doctor(repo, "--fix")[0] == 0
    assert not (repo / "agents/sync").exists() and list((repo / "agents/.archive").glob("sync-*.json"))
    assert port_leases(repo) == {}


def test_doctor_never_touches_user_branches_named_like_grove_s(repo):
    """Issue 10, defect 1: ownership comes from Grove's journal, never from a branch's name."""
    tip = commit_file(repo, "x.txt", "x\n")
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    for branch in ("feature/auth/login-form", "feature/ui/new-button", "adw/legacy-thing", "adw/ghost"):
        git(repo, "branch", branch, tip)
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    assert inv(repo, "setup", "--adw-id", "ghost").returncode == 2, "branch exists and is not Grove's: refused"
    for args in ((), ("--fix",)):
        code, report = doctor(repo, *args)
        assert code == 0 and report["problems"] == [], report
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == refs, "byte-identical refs"


def test_doctor_fixes_a_grove_branch_a_crash_orphaned(repo):
    inv(repo, "setup", "--adw-id", "ghost", "--no-install", check=True)
    tip = commit_file(repo / "trees/ghost", "work.txt", "agent work\n")
    # A crash lost the worktree and the state but not the branch Grove made.
    git(repo, "worktree", "remove", "--force", str(repo / "trees/ghost"))
    shutil.rmtree(repo / "agents/ghost")
    code, report = doctor(repo)
    orphans = [p for p in report["problems"] if p["kind"] == "orphan_branch"]
    assert code == 1 and [p["branch"] for p in orphans] == ["adw/ghost"]
    code, report = doctor(repo, "--fix")
    assert code == 0
    backup = next(p for p in report["problems"] if p["kind"] == "orphan_branch")["backup_ref"]
    assert backup.startswith("refs/grove-backup/adw/ghost/") and git(repo, "rev-parse", backup) == tip
    assert backup in [b["ref"] for b in report["backups"]], "doctor lists backup refs"
    inv(repo, "setup", "--adw-id", "ghost", "--no-install", check=True)


def test_doctor_dead_claim_and_corrupt_state(repo):
    registry = repo / "agents/.grove/ports.json"
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"version": 1, "claims": {"3": {"adw_id": "dead", "pid": 999999}}}))
    (repo / "agents/bad").mkdir()
    (repo / "agents/bad/adw_state.json").write_text("{not json")
    code, report = doctor(repo, "--fix")
    kinds = {p["kind"]: p for p in report["problems"]}
    assert kinds["dead_claim"]["fixed"] and not kinds["corrupt_state"]["fixed"]
    assert "agents/bad/adw_state.json" in kinds["corrupt_state"]["detail"] and code == 1
    assert (repo / "agents/bad/adw_state.json").read_text() == "{not json", "never silently replaced"
    # The per-repo claim migrated into the machine's registry (issue 23), then doctor released it.
    assert port_leases(repo) == {} and not registry.exists() and registry.with_name("ports.json.migrated").exists()


# -- the Python API ----------------------------------------------------------------------------


def test_api_and_tasks_see_the_same_state(repo):
    meta = wm.create_worktree_for_agent("TASK-001", "Backend API Implementation", project_root=repo,
                                        install=False, db=False)
    assert meta.branch == f"feature/TASK-001/backend-api-implementation-{meta.name}" and meta.status == "created"
    assert meta.path == repo / "trees" / meta.name and meta.path.is_dir()
    inv(repo, "status", "--adw-id", meta.name, "--set", "assigned", "--agent-id", "backend-specialist", check=True)
    got = wm.get_worktree_metadata(meta.name, project_root=repo)
    assert got.status == "assigned" and got.agent_id == "backend-specialist" and got.assigned_at
    wm.update_worktree_status(meta.name, "in_progress", project_root=repo)
    wm.update_worktree_status(meta.name, "failed", error_message="Tests failed: 3 errors", project_root=repo)
    assert inv_json(repo, "status", "--adw-id", meta.name)["error_message"] == "Tests failed: 3 errors"
    assert [m.name for m in wm.list_worktrees(epic_id="TASK-001", project_root=repo)] == [meta.name]
    assert wm.list_worktrees(status="completed", project_root=repo) == []
    assert any(w["branch"] == meta.branch for w in wm.get_all_git_worktrees(project_root=repo))
    with pytest.raises(ValueError):
        wm.update_worktree_status(meta.name, "merged", project_root=repo)
    assert wm.cleanup_epic_worktrees("TASK-001", delete_branches=True, project_root=repo) == 1
    archived = wm.list_archived_worktrees(epic_id="TASK-001", project_root=repo)
    assert [a.name for a in archived] == [meta.name] and archived[0].cleaned_at


def test_api_errors_follow_the_seed(repo):
    meta = wm.create_worktree_for_agent("E", "api", project_root=repo, install=False, db=False)
    with pytest.raises(ValueError, match="not finished"):
        wm.cleanup_worktree(meta.name, project_root=repo)
    wm.cleanup_worktree(meta.name, force=True, delete_branch=True, project_root=repo)
    assert wm.get_worktree_metadata(meta.name, project_root=repo) is None
    commit_file(repo, "scripts/reset_db.sh", "#!/bin/sh\nexit 4\n")
    git(repo, "push", "-q", "origin", "main")
    with pytest.raises(RuntimeError, match="failed at db"):
        wm.create_worktree_for_agent("E", "api", project_root=repo, install=False)
    (repo / "agents/broken").mkdir()
    (repo / "agents/broken/adw_state.json").write_text(json.dumps({"adw_id": "broken", "status": "created"}))
    with pytest.raises(ValueError, match="agents/broken/adw_state.json: field 'worktree_path'"):
        wm.get_worktree_metadata("broken", project_root=repo)


def test_abandoned_cleanup_via_api(repo):
    make_agent(repo, "aband")
    _age(repo, "aband", 10)
    assert wm.cleanup_abandoned_worktrees(max_age_days=7, project_root=repo) == 1
    assert "adw/aband" in git(repo, "branch")


def test_readers_skip_an_agent_torn_down_while_they_list(repo, monkeypatch):
    # A teardown in another process can archive a state between state.all_ids() and state.load()
    # (`inv list --watch` polls while agents come and go): list, gc, exec --all and merge --all
    # took the None that load() then gives for a state and crashed (TypeError, AttributeError).
    from grove.ops import cleanup, execute, merge, queries

    settings = settings_for(repo)
    for adw_id in ("stay", "gone"):
        make_agent(repo, adw_id)
        state.set_status(settings, adw_id, "completed")
    listed = state.all_ids

    def listed_then_torn_down(s):
        ids = listed(s)
        cleanup.teardown(s, "gone")  # lands right after the listing
        return ids

    readers = {
        "list": lambda: [r["adw_id"] for r in queries.list_agents(settings)],
        "gc": lambda: [a["adw_id"] for a in cleanup.gc(settings, 0, dry_run=True)["abandoned"]],
        "exec --all": lambda: execute.select(settings, [], None, True)[0],
        "merge --all": lambda: [s["adw_id"] for s in merge.select(settings, [], None, True)[0]],
    }
    expected = {"list": ["stay"], "gc": [], "exec --all": ["stay"], "merge --all": ["stay"]}
    for name, read in readers.items():
        if state.load(settings, "gone") is None:  # set up again for the next reader
            make_agent(repo, "gone")
            state.set_status(settings, "gone", "completed")
        monkeypatch.setattr(state, "all_ids", listed_then_torn_down)
        try:
            assert read() == expected[name], name
        finally:
            monkeypatch.setattr(state, "all_ids", listed)
