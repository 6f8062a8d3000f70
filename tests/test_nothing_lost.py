"""Nothing is ever lost (issue 10): one regression test per defect found by the independent tests.

Each drives real git in a temporary repository with a bare origin, through `inv`/`grove` or the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import make_idle, cli, commit_file, git, inv, inv_json

from grove import worktree_manager as wm


def setup_agent(repo, adw_id, *extra):
    return inv_json(repo, "setup", "--adw-id", adw_id, "--no-install", *extra)


def finish(repo, adw_id, status="completed"):
    inv(repo, "status", "--adw-id", adw_id, "--set", status, check=True)


def commit_db_script(repo, body: str) -> None:
    """A reset_db.sh on the base that seeds app.db in the worktree."""
    script = repo / "scripts/reset_db.sh"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    git(repo, "add", "scripts/reset_db.sh")
    git(repo, "commit", "-q", "-m", "db script")
    git(repo, "push", "-q", "origin", "main")


def reachable(repo, commit) -> bool:
    """Some ref (any ref at all) contains ``commit``."""
    return bool(git(repo, "for-each-ref", f"--contains={commit}", "--format=%(refname)"))


def refs_of(repo):
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


# -- defect 2: backup refs are unique per event --------------------------------------------------


def test_backup_refs_are_unique_per_event_and_never_rewritten(repo):
    tips = []
    for round_ in range(2):
        setup_agent(repo, "b1")
        tips.append(commit_file(repo / "trees/b1", "work.txt", f"round {round_}\n"))
        finish(repo, "b1")
        result = inv_json(repo, "teardown", "--adw-id", "b1", "--delete-branch", "--force")
        assert result["branch_action"] == "deleted" and result["backup_ref"]
    backups = git(repo, "for-each-ref", "--format=%(objectname)", "refs/grove-backup/adw/b1/").split()
    assert sorted(backups) == sorted(tips), "both unmerged tips kept, under two refs"
    listed = inv_json(repo, "doctor")["backups"]
    assert sorted(b["commit"] for b in listed) == sorted(tips)


# -- defect 3: detached HEAD commits -------------------------------------------------------------


def test_plain_teardown_keeps_commits_made_on_a_detached_head(repo):
    setup_agent(repo, "d1")
    wt = repo / "trees/d1"
    git(wt, "checkout", "-q", "--detach")
    lost = commit_file(wt, "detached.txt", "work on a detached HEAD\n")
    finish(repo, "d1")
    result = inv_json(repo, "teardown", "--adw-id", "d1")
    assert [git(repo, "rev-parse", ref) for ref in result["worktree_backup_refs"]] == [lost]
    git(repo, "gc", "--prune=now", "-q")
    assert git(repo, "cat-file", "-t", lost) == "commit"


def test_merge_cleanup_keeps_detached_commits_of_an_empty_branch(repo):
    setup_agent(repo, "d2")
    wt = repo / "trees/d2"
    git(wt, "checkout", "-q", "--detach")
    lost = commit_file(wt, "detached.txt", "work\n")
    finish(repo, "d2")
    summary = inv_json(repo, "merge", "--adw-id", "d2", "--cleanup")
    assert summary["results"][0]["outcome"] == "merged"  # the branch itself has nothing new
    assert reachable(repo, lost), "the detached commit survived --cleanup"


# -- defect 4: no-net-change branches ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty commit", "change and revert"])
def test_branch_with_no_net_change_is_backed_up_before_deletion(repo, kind):
    setup_agent(repo, "n1")
    wt = repo / "trees/n1"
    if kind == "empty commit":
        git(wt, "commit", "-q", "--allow-empty", "-m", "empty")
    else:
        commit_file(wt, "x.txt", "x\n")
        git(wt, "revert", "--no-edit", "HEAD")
    tip = git(wt, "rev-parse", "HEAD")
    finish(repo, "n1")
    result = inv_json(repo, "teardown", "--adw-id", "n1", "--delete-branch")  # merged by tree: no --force needed
    assert result["branch_action"] == "deleted" and git(repo, "rev-parse", result["backup_ref"]) == tip


def test_doctor_backs_up_an_orphaned_branch_with_no_net_change(repo):
    """Issue 25, tree equality from another angle: doctor --fix deletes a branch a crash orphaned;
    a change and its revert is tree-equal to the base but its commits are in no other ref."""
    import shutil

    setup_agent(repo, "n2")
    wt = repo / "trees/n2"
    commit_file(wt, "x.txt", "x\n")
    git(wt, "revert", "--no-edit", "HEAD")
    tip = git(wt, "rev-parse", "HEAD")
    git(repo, "worktree", "remove", "--force", str(wt))
    shutil.rmtree(repo / "agents/n2")
    report = json.loads(inv(repo, "doctor", "--fix", "--json").stdout)
    fixed = [p for p in report["problems"] if p["kind"] == "orphan_branch"]
    assert [p["branch"] for p in fixed] == ["adw/n2"] and not git(repo, "branch", "--list", "adw/n2")
    assert fixed[0]["backup_ref"] and git(repo, "rev-parse", fixed[0]["backup_ref"]) == tip
    git(repo, "gc", "--prune=now", "-q")
    assert git(repo, "cat-file", "-t", tip) == "commit"


# -- defect 5: --force salvages, never loses ------------------------------------------------------


def dirty_agent(repo, adw_id):
    setup_agent(repo, adw_id)
    wt = repo / "trees" / adw_id
    (wt / "README.md").write_text("an edit to a tracked file\n")
    (wt / "new" / "deep").mkdir(parents=True)
    (wt / "new" / "deep" / "file.txt").write_text("a new file\n")
    (wt / "staged.txt").write_text("staged\n")
    git(wt, "add", "staged.txt")
    (wt / ".env").write_text("SECRET=do-not-commit\n")  # Grove's own env file: never salvaged into git
    # Issue 25: .env stays out as a file Grove wrote; a file the repository ignores (*.db) must too.
    (wt / "local.db").write_text("SECRET ROWS\n")
    return wt


def salvaged_files(repo, ref):
    return sorted(git(repo, "diff", "--name-only", f"{ref}^", ref).split())


def test_teardown_force_salvages_tracked_staged_and_new_files_not_ignored_ones(repo):
    git(repo, "stash", "list")
    main_head, main_status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    wt = dirty_agent(repo, "f1")
    out = inv(repo, "teardown", "--adw-id", "f1", "--force", "--json")
    result = json.loads(out.stdout)
    ref = result["salvage_ref"]
    assert ref.startswith("refs/grove-salvage/f1/") and not wt.exists()
    assert salvaged_files(repo, ref) == ["README.md", "new/deep/file.txt", "staged.txt"]
    assert {".env", "local.db"}.isdisjoint(git(repo, "ls-tree", "-r", "--name-only", ref).split("\n"))
    assert git(repo, "show", f"{ref}:README.md") == "an edit to a tracked file"
    assert git(repo, "stash", "list") == "" and git(repo, "rev-parse", "HEAD") == main_head
    assert git(repo, "status", "--porcelain") == main_status, "the user's checkout and index untouched"
    # Archives of ignored files are listed too, as kind "archive" (issue 20).
    listed = [r for r in inv_json(repo, "salvage", "--adw-id", "f1") if r["kind"] == "salvage"]
    assert [r["ref"] for r in listed] == [ref] and listed[0]["files"] == ["README.md", "new/deep/file.txt", "staged.txt"]
    # Back into a new worktree of the same agent (setup resumes on the kept branch), as uncommitted work.
    setup_agent(repo, "f1")
    restored = inv_json(repo, "salvage", "--restore", ref, "--adw-id", "f1")
    assert sorted(restored["files"]) == ["README.md", "new/deep/file.txt", "staged.txt"]
    assert (wt / "README.md").read_text() == "an edit to a tracked file\n"
    assert (wt / "new/deep/file.txt").read_text() == "a new file\n"
    assert git(wt, "diff", "--cached", "--name-only") == "", "restored as unstaged work"


def test_salvage_restore_refuses_bad_refs_and_dirty_worktrees(repo):
    setup_agent(repo, "r1")
    before = refs_of(repo)
    out = inv(repo, "salvage", "--restore", "refs/heads/main", "--adw-id", "r1")
    assert out.returncode == 2 and "not a Grove salvage ref" in out.stderr
    assert refs_of(repo) == before
    # Issue 25: this half never ran. A real salvage, restored into a worktree with staged edits and
    # into one with unstaged edits: refused (exit 1, the operation cannot be done), nothing changed.
    wt = repo / "trees/r1"
    (wt / "salvaged.txt").write_text("salvaged work\n")
    ref = inv_json(repo, "teardown", "--adw-id", "r1", "--force")["salvage_ref"]
    setup_agent(repo, "r1")
    for how in ("staged", "unstaged"):
        (wt / "README.md").write_text(f"the user's {how} edit\n")
        if how == "staged":
            git(wt, "add", "README.md")
        status, before = git(wt, "status", "--porcelain"), refs_of(repo)
        out = inv(repo, "salvage", "--restore", ref, "--adw-id", "r1")
        assert out.returncode == 1 and "uncommitted changes" in out.stderr and "nothing was restored" in out.stderr
        assert git(wt, "status", "--porcelain") == status, f"{how}: index and files as they were"
        assert (wt / "README.md").read_text() == f"the user's {how} edit\n" and not (wt / "salvaged.txt").exists()
        assert refs_of(repo) == before
        git(wt, "reset", "-q", "--hard")
    restored = inv_json(repo, "salvage", "--restore", ref, "--adw-id", "r1")  # clean now: it goes
    assert restored["files"] == ["salvaged.txt"] and (wt / "salvaged.txt").read_text() == "salvaged work\n"


@pytest.mark.parametrize("kind", ["staged", "unstaged", "untracked"])
def test_teardown_force_salvages_work_of_each_kind_alone(repo, kind):
    """Issue 25: each kind of uncommitted work on its own is salvaged (the tests above mix them, so
    salvage deciding "clean" from one kind alone went unnoticed)."""
    setup_agent(repo, "k1")
    wt = repo / "trees/k1"
    path = "notes.txt" if kind == "untracked" else "README.md"
    (wt / path).write_text(f"{kind} work\n")
    if kind == "staged":
        git(wt, "add", path)
    ref = inv_json(repo, "teardown", "--adw-id", "k1", "--force")["salvage_ref"]
    assert ref and git(repo, "show", f"{ref}:{path}") == f"{kind} work"


def test_backup_refs_made_in_the_same_second_are_distinct(repo, monkeypatch):
    """Issue 25: the test above makes its two events seconds apart. Names made within one second
    (the stamp pinned here) must still be one ref per event, and never rewrite the first."""
    from grove.safety import preserve

    monkeypatch.setattr(preserve, "_stamp", lambda: "20260101T000000Z")
    first = git(repo, "rev-parse", "HEAD")
    second = commit_file(repo, "more.txt", "more\n")
    refs = [preserve.backup(repo, "adw/same", c, "test") for c in (first, second, first)]
    assert refs[0] != refs[1] and refs[2] == refs[0], "the same commit twice is one event saved once"
    assert [git(repo, "rev-parse", r) for r in refs[:2]] == [first, second]
    assert git(repo, "for-each-ref", "--format=%(objectname)", "refs/grove-backup/adw/same/").split() \
        == [first, second]


@pytest.mark.parametrize("how", ["gc", "teardown --all", "api force", "doctor --fix"])
def test_every_removal_path_salvages_uncommitted_work(repo, how):
    wt = dirty_agent(repo, "p1")
    if how == "gc":
        make_idle(repo, "p1")
        git(repo, "commit", "-q", "--allow-empty", "-m", "bump")  # unrelated activity elsewhere
        gc = inv_json(repo, "gc", "--max-age-days", "7")
        assert [a["adw_id"] for a in gc["removed"]] == ["p1"], gc
    elif how == "teardown --all":
        finish(repo, "p1", "failed")
        inv(repo, "teardown", "--all", check=True)
    elif how == "api force":
        wm.cleanup_worktree("p1", force=True, project_root=repo)
    else:  # git loses track of the worktree: doctor moves the directory aside, never deletes it
        __import__("shutil").rmtree(repo / ".git/worktrees/p1")
        inv(repo, "doctor", "--fix", check=False)
        moved = list((repo / "agents/.archive").glob("p1-dir-*"))
        assert moved and (moved[0] / "new/deep/file.txt").read_text() == "a new file\n"
        return
    assert not wt.exists()
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/grove-salvage/p1/").split()
    assert len(refs) == 1 and salvaged_files(repo, refs[0]) == ["README.md", "new/deep/file.txt", "staged.txt"]


# -- defect 6: a re-run keeps the database ------------------------------------------------------


def test_rerun_keeps_the_database_and_reset_db_resets_it(repo):
    commit_db_script(repo, "echo 'seed row' > app.db")
    setup_agent(repo, "db1")
    db = repo / "trees/db1/app.db"
    db.write_text(db.read_text() + "the agent's own row\n")
    again = setup_agent(repo, "db1")
    assert again["steps"]["db"]["outcome"] == "kept"
    assert "the agent's own row" in db.read_text()
    reset = setup_agent(repo, "db1", "--reset-db")
    assert reset["steps"]["db"]["outcome"] == "done" and db.read_text() == "seed row\n"


# -- defect 8: explicit claims hold --------------------------------------------------------------


def test_explicit_port_claims_hold_until_released(repo):
    slots = {a: inv_json(repo, "ports.claim", "--adw-id", a)["slot"] for a in ("c1", "c2", "c3")}
    assert len(set(slots.values())) == 3, "each caller gets its own slot though none has a state"
    assert inv_json(repo, "ports.claim", "--adw-id", "c1")["slot"] == slots["c1"]
    assert inv_json(repo, "doctor")["problems"] == [], "an explicit claim is not a dead claim"
    inv(repo, "ports.release", "--adw-id", "c1", check=True)
    assert "c1" not in [r["adw_id"] for r in inv_json(repo, "ports.show")]


# -- defect 9: the API honours config and validates -----------------------------------------------


def test_api_base_branch_defaults_to_configuration(repo, monkeypatch):
    git(repo, "branch", "develop")
    develop_tip = git(repo, "rev-parse", "develop")
    monkeypatch.setenv("ADW_BASE_BRANCH", "develop")
    meta = wm.create_worktree_for_agent("E1", "api task", project_root=repo, install=False, db=False)
    assert meta.base_branch == "develop" and git(meta.path, "rev-parse", "HEAD") == develop_tip


def test_api_naive_datetime_is_utc(repo, monkeypatch):
    setup_agent(repo, "t1")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        wm.update_worktree_status("t1", "completed", completed_at=datetime(2026, 1, 1, 12, 0), project_root=repo)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert json.loads((repo / "agents/t1/adw_state.json").read_text())["completed_at"] == "2026-01-01T12:00:00Z"
    meta = wm.get_worktree_metadata("t1", project_root=repo)
    assert meta.completed_at == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_api_refuses_undocumented_fields_and_never_deletes_the_base(repo):
    setup_agent(repo, "t2")
    before = json.loads((repo / "agents/t2/adw_state.json").read_text())
    with pytest.raises(ValueError, match="cannot set branch"):
        wm.update_worktree_status("t2", "completed", branch="main", project_root=repo)
    assert json.loads((repo / "agents/t2/adw_state.json").read_text()) == before
    # Even a state edited by hand to name the base cannot make teardown delete it.
    path = repo / "agents/t2/adw_state.json"
    path.write_text(json.dumps(dict(before, branch="main", status="completed")))
    main_tip = git(repo, "rev-parse", "main")
    wm.cleanup_worktree("t2", delete_branch=True, force=True, project_root=repo)
    assert git(repo, "rev-parse", "main") == main_tip


def test_teardown_keeps_a_branch_checked_out_elsewhere(repo):
    setup_agent(repo, "t3")
    commit_file(repo / "trees/t3", "w.txt", "w\n")
    finish(repo, "t3")
    inv(repo, "teardown", "--adw-id", "t3", check=True)  # keeps the branch
    git(repo, "worktree", "add", "-q", str(repo.parent / "users-own"), "adw/t3")
    setup_agent(repo, "t4")
    finish(repo, "t4")
    result = inv_json(repo, "teardown", "--adw-id", "t4", "--delete-branch", "--force")
    assert result["branch_action"] == "deleted"
    assert "adw/t3" in git(repo, "branch", "--list", "adw/t3"), "the user's worktree on adw/t3 keeps it"


# -- defect 10: setup resumes a torn-down agent ---------------------------------------------------


def test_setup_resumes_on_the_branch_teardown_kept(repo):
    setup_agent(repo, "k1")
    tip = commit_file(repo / "trees/k1", "work.txt", "kept work\n")
    finish(repo, "k1")
    inv(repo, "teardown", "--adw-id", "k1", check=True)
    state = setup_agent(repo, "k1")
    assert state["branch"] == "adw/k1" and git(repo / "trees/k1", "rev-parse", "HEAD") == tip
    inv(repo, "status", "--adw-id", "k1", "--set", "completed", check=True)
    assert inv_json(repo, "status", "--adw-id", "k1")["commits"] == [tip]


# -- defect 11: a kill -9 inside `git worktree add` ----------------------------------------------


def make_stillborn(repo, adw_id):
    """What git leaves when killed inside `worktree add`: the entry locked 'initializing', HEAD null."""
    setup_agent(repo, adw_id, "--no-db")
    wt = repo / "trees" / adw_id
    admin = repo / ".git/worktrees" / adw_id
    for child in wt.iterdir():
        if child.name != ".git":
            __import__("shutil").rmtree(child) if child.is_dir() else child.unlink()
    (admin / "locked").write_text("initializing\n")
    (admin / "HEAD").write_text("0" * 40 + "\n")
    (admin / "index").unlink(missing_ok=True)


def test_doctor_fix_repairs_a_stillborn_worktree(repo):
    make_stillborn(repo, "s1")
    assert inv(repo, "doctor").returncode == 1
    broken = __import__("subprocess").run(["git", "-C", str(repo), "rev-list", "--all"], capture_output=True)
    assert broken.returncode != 0, "precondition: git itself is broken"
    report = json.loads(inv(repo, "doctor", "--fix", "--json").stdout)
    assert [p["kind"] for p in report["problems"] if p["fixed"]][:1] == ["stillborn_worktree"]
    git(repo, "rev-list", "--all")
    inv(repo, "setup", "--adw-id", "s1", "--no-install", check=True)
    assert inv(repo, "doctor").returncode == 0


def test_setup_rerun_repairs_its_own_stillborn_worktree(repo):
    make_stillborn(repo, "s2")
    inv(repo, "setup", "--adw-id", "s2", "--no-install", check=True)
    git(repo, "rev-list", "--all")
    assert (repo / "trees/s2/README.md").is_file() and inv(repo, "doctor").returncode == 0


# -- defect 12: bulk cleanups and ordering -------------------------------------------------------


def test_bulk_cleanups_leave_conflict_agents(repo):
    for adw_id, status in (("e1", "completed"), ("e2", "failed"), ("e3", "completed")):
        setup_agent(repo, adw_id, "--epic", "EP")
        finish(repo, adw_id, status)
    finish(repo, "e3", "conflict")
    result = inv_json(repo, "cleanup-epic", "--epic", "EP")
    assert result["count"] == 2 and [k["adw_id"] for k in result["kept"]] == ["e3"]
    setup_agent(repo, "e4")
    finish(repo, "e4", "completed")
    finish(repo, "e4", "conflict")
    inv(repo, "teardown", "--all", check=True)
    assert (repo / "trees/e3").is_dir() and (repo / "trees/e4").is_dir()
    inv(repo, "teardown", "--adw-id", "e4", check=True)  # one explicit teardown still works


def test_list_is_most_recent_first_within_one_second(repo):
    from grove.ops import chain
    from grove.core.report import Reporter
    from conftest import settings_for

    settings = settings_for(repo)
    made = ["mike", "alpha", "zulu", "bravo", "yankee", "charlie"]  # not in name order: time must decide
    for adw_id in made:
        chain.setup(settings, chain.Request(adw_id, install=False, db=False, fetch=False), Reporter(quiet=True))
    assert [r["adw_id"] for r in inv_json(repo, "list")] == made[::-1]


# -- found by the adversarial review ------------------------------------------------------------


def test_commits_only_the_worktree_s_reflog_and_own_refs_hold_are_kept(repo):
    setup_agent(repo, "w1")
    wt = repo / "trees/w1"
    git(wt, "switch", "-q", "--detach")
    in_reflog = commit_file(wt, "a.txt", "only in the HEAD reflog\n")
    git(wt, "switch", "-q", "adw/w1")
    git(wt, "switch", "-q", "--detach")
    in_worktree_ref = commit_file(wt, "b.txt", "only in refs/worktree/keep\n")
    git(wt, "update-ref", "refs/worktree/keep", "HEAD")
    git(wt, "switch", "-q", "adw/w1")
    finish(repo, "w1")
    result = inv_json(repo, "teardown", "--adw-id", "w1")
    assert len(result["worktree_backup_refs"]) == 2
    git(repo, "gc", "--prune=now", "-q")
    assert reachable(repo, in_reflog) and reachable(repo, in_worktree_ref)


def test_a_repository_nested_in_a_worktree_is_moved_aside_not_lost(repo):
    setup_agent(repo, "n2")
    nested = repo / "trees/n2/tool"
    nested.mkdir()
    git(nested, "init", "-q")
    inner = commit_file(nested, "p.txt", "nested work\n")
    result = inv_json(repo, "teardown", "--adw-id", "n2", "--force")
    [moved] = result["moved_nested"]
    assert git(Path(moved), "rev-parse", "HEAD") == inner and (Path(moved) / "p.txt").read_text() == "nested work\n"


def test_a_symlinked_worktree_path_is_refused_before_anything_changes(repo, tmp_path):
    setup_agent(repo, "s3")
    elsewhere = tmp_path / "big" / "s3"
    elsewhere.parent.mkdir()
    git(repo, "worktree", "move", str(repo / "trees/s3"), str(elsewhere))
    (repo / "trees/s3").symlink_to(elsewhere)
    (elsewhere / "draft.txt").write_text("work\n")
    before = refs_of(repo)
    out = inv(repo, "teardown", "--adw-id", "s3", "--force")
    assert out.returncode == 1 and "symlink" in out.stderr
    assert (elsewhere / "draft.txt").read_text() == "work\n" and refs_of(repo) == before


def test_a_rolled_back_setup_never_puts_env_secrets_into_git(repo):
    (repo / ".mcp.json").write_text("{ not json\n")
    git(repo, "add", ".mcp.json")
    git(repo, "commit", "-q", "-m", "broken config")
    git(repo, "push", "-q", "origin", "main")
    (repo / ".env").write_text("SECRET=sk-live-123\n")  # not git-ignored in this repo
    out = inv(repo, "setup", "--adw-id", "r2", "--no-install")
    assert out.returncode == 2 and not (repo / "trees/r2").exists()
    for ref in git(repo, "for-each-ref", "--format=%(refname)", "refs/grove-salvage/").split():
        assert ".env" not in git(repo, "ls-tree", "-r", "--name-only", ref).split()
    assert "sk-live" not in git(repo, "log", "--all", "-p")


def test_generated_paths_never_hide_the_user_s_own_files(repo):
    (repo / "playwright-mcp-config.json").write_text('{"outputDir": "./reports/"}\n')
    git(repo, "add", "playwright-mcp-config.json")
    git(repo, "commit", "-q", "-m", "playwright config")
    git(repo, "push", "-q", "origin", "main")
    (repo / "reports").mkdir()
    (repo / "reports/q3.md").write_text("the user's report\n")
    (repo / ".env").write_text("X=1\n")  # the user's own, not ignored
    out = inv(repo, "setup", "--adw-id", "h2", "--no-install")
    assert out.returncode == 0 and ".env is not git-ignored" in out.stderr
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert "reports/q3.md" in status and ".env" in status, "the main checkout sees its files as before"
    assert git(repo / "trees/h2", "status", "--porcelain", "--", "reports") == "", "Grove's own dir stays out"


def test_file_names_that_are_not_utf8_do_not_stop_a_bulk_teardown(repo):
    for adw_id in ("u1", "u2"):
        setup_agent(repo, adw_id)
        finish(repo, adw_id, "failed")
    (repo / "trees/u1").joinpath(os.fsdecode(b"bad\xff")).write_text("x\n")
    result = inv_json(repo, "teardown", "--all")
    assert sorted(r["adw_id"] for r in result["torn_down"]) == ["u1", "u2"]
    [ref] = git(repo, "for-each-ref", "--format=%(refname)", "refs/grove-salvage/u1/").split()
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "-z", ref],
                           capture_output=True, check=True).stdout.split(b"\0")
    assert b"bad\xff" in names, "salvaged under its own (non-UTF-8) name"


def test_doctor_reports_a_symlink_in_trees_and_still_fixes_the_rest(repo, tmp_path):
    (tmp_path / "userstuff").mkdir()
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees/link").symlink_to(tmp_path / "userstuff")
    (repo / "trees/stray").mkdir()
    out = inv(repo, "doctor", "--fix", "--json")
    report = json.loads(out.stdout)
    kinds = {p["path"].rsplit("/", 1)[-1]: p for p in report["problems"]}
    assert kinds["stray"]["fixed"] and not kinds["link"]["fixed"] and out.returncode == 1
    assert (repo / "trees/link").is_symlink() and (tmp_path / "userstuff").is_dir()


def test_a_worktree_made_anew_gets_its_database_again(repo):
    commit_db_script(repo, "echo seeded > app.db")
    setup_agent(repo, "m1")
    git(repo, "worktree", "remove", "--force", str(repo / "trees/m1"))
    again = setup_agent(repo, "m1")
    assert again["steps"]["db"]["outcome"] == "done" and (repo / "trees/m1/app.db").is_file()


@pytest.mark.parametrize("kwargs", [{"completed_at": "not a date"}, {"assigned_at": 12}, {"agent_id": {"a"}},
                                    {"github_sub_issue": "7"}])
def test_api_refuses_bad_field_values_before_anything_changes(repo, kwargs):
    setup_agent(repo, "v1")
    before = (repo / "agents/v1/adw_state.json").read_text()
    with pytest.raises(ValueError):
        wm.update_worktree_status("v1", "in_progress", project_root=repo, **kwargs)
    assert (repo / "agents/v1/adw_state.json").read_text() == before
    assert wm.list_worktrees(project_root=repo)[0].name == "v1"


def test_teardown_spares_whoever_started_it_and_its_own_pipeline(repo, tmp_path):
    setup_agent(repo, "g1")
    finish(repo, "g1")
    log = tmp_path / "alive.log"
    wt = repo / "trees/g1"
    cmd = " ".join(cli()) + " teardown --adw-id g1 --json"
    script = f'cd {wt} && sh -c "{cmd} | cat > {tmp_path}/out.json"; echo alive >> {log}'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and log.read_text() == "alive\n", out.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["stopped_processes"] == [] and not wt.exists()


def test_an_agent_s_edit_of_a_config_grove_rewrote_counts_as_work(repo):
    (repo / ".mcp.json").write_text('{"mcpServers": {"pw": {"command": "./bin/pw"}}}\n')
    git(repo, "add", ".mcp.json")
    git(repo, "commit", "-q", "-m", "mcp config")
    git(repo, "push", "-q", "origin", "main")
    setup_agent(repo, "m2")
    config = repo / "trees/m2/.mcp.json"
    data = json.loads(config.read_text())
    data["mcpServers"]["db"] = {"command": "./bin/db"}
    config.write_text(json.dumps(data))
    finish(repo, "m2")
    out = inv(repo, "teardown", "--adw-id", "m2")
    assert out.returncode == 1 and ".mcp.json" in out.stderr and config.exists(), "a plain teardown asks first"
    result = inv_json(repo, "teardown", "--adw-id", "m2", "--force")
    saved = json.loads(git(repo, "show", f"{result['salvage_ref']}:.mcp.json"))
    assert saved["mcpServers"]["db"] == {"command": "./bin/db"}


def test_merge_cleanup_leaves_a_dirty_agent_in_place_and_says_why(repo):
    """Issue 20, item 7 changed this: uncommitted work is never merged nor cleaned up as merged."""
    setup_agent(repo, "c1")
    commit_file(repo / "trees/c1", "feature.txt", "done\n")
    (repo / "trees/c1/notes.txt").write_text("left over\n")
    finish(repo, "c1")
    out = inv(repo, "merge", "--adw-id", "c1", "--cleanup", "--json")
    [result] = json.loads(out.stdout)["results"]
    assert out.returncode == 1 and result["outcome"] == "skipped" and result["uncommitted"] == ["notes.txt"]
    assert (repo / "trees/c1/notes.txt").read_text() == "left over\n"


def test_a_merge_killed_inside_worktree_add_of_its_integration_tree_heals(repo):
    """Found by the model-based test: a kill inside the merge's own `git worktree add` (seed 1055215874)."""
    setup_agent(repo, "i1")
    commit_file(repo / "trees/i1", "i.txt", "i\n")
    finish(repo, "i1")
    inv_json(repo, "merge", "--adw-id", "i1", "--dry-run")
    git(repo, "worktree", "add", "-q", "--detach", "--no-checkout", str(repo / "trees/.grove-merge"), "main")
    [admin] = [a for a in (repo / ".git/worktrees").iterdir() if ".grove-merge" in (a / "gitdir").read_text()]
    (admin / "locked").write_text("initializing\n")
    (admin / "HEAD").write_text("0" * 40 + "\n")
    summary = inv_json(repo, "merge", "--adw-id", "i1")
    assert summary["results"][0]["outcome"] == "merged"
    git(repo, "rev-list", "--all")
    assert inv(repo, "doctor").returncode == 0
