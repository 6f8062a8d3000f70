"""The merge queue, in real repos with a bare origin (issue 4)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import cli, commit_file, git, inv, inv_json, settings_for

from grove.ops import chain
from grove.core import state
from grove.core.report import Reporter


def agent(repo: Path, adw_id: str, files: dict[str, str], status: str = "completed") -> Path:
    """An agent set up in-process (fast), with one commit per file, marked ``status``."""
    settings = settings_for(repo)
    chain.setup(settings, chain.Request(adw_id, install=False, db=False), Reporter(quiet=True))
    wt = repo / "trees" / adw_id
    for name, text in files.items():
        commit_file(wt, name, text, f"{adw_id}: {name}")
    if status != "created":
        state.set_status(settings, adw_id, status)
    return wt


def read_state(repo: Path, adw_id: str) -> dict:
    return json.loads((repo / "agents" / adw_id / "adw_state.json").read_text())


def test_three_clean_branches_merge_in_order_and_checkout_follows(repo):
    for i in (1, 2, 3):
        agent(repo, f"a{i}", {f"f{i}.txt": f"{i}\n"})
    before = git(repo, "rev-parse", "main")
    summary = inv_json(repo, "merge", "--adw-id", "a3", "--adw-id", "a1", "--adw-id", "a2")
    assert [r["adw_id"] for r in summary["results"]] == ["a3", "a1", "a2"]
    assert all(r["outcome"] == "merged" and len(r["commits"]) == 1 for r in summary["results"])
    assert summary["base_before"] == before and summary["base_after"] == git(repo, "rev-parse", "main")
    subjects = git(repo, "log", "--first-parent", "--format=%s", "main").split("\n")
    assert subjects[:3] == ["Merge adw/a2 (adw a2)", "Merge adw/a1 (adw a1)", "Merge adw/a3 (adw a3)"]
    # main was checked out and clean here, so it came along: index and files match the new tip.
    assert all((repo / f"f{i}.txt").exists() for i in (1, 2, 3)) and git(repo, "status", "--porcelain") == ""
    for i in (1, 2, 3):
        s = read_state(repo, f"a{i}")
        assert s["status"] == "merged" and s["merged_at"] and len(s["commits"]) == 1
    assert git(repo, "rev-parse", "origin/main") == before, "no push without --push"


def test_conflict_in_the_middle_is_skipped_and_the_rest_merge(repo):
    agent(repo, "c1", {"shared.txt": "from c1\n"})
    agent(repo, "c2", {"shared.txt": "from c2\n"})
    agent(repo, "c3", {"other.txt": "c3\n"})
    out = inv(repo, "merge", "--adw-id", "c1", "--adw-id", "c2", "--adw-id", "c3", "--json")
    assert out.returncode == 1, "exit 0 only if every requested branch merged"
    outcomes = {r["adw_id"]: r for r in json.loads(out.stdout)["results"]}
    assert [outcomes[i]["outcome"] for i in ("c1", "c2", "c3")] == ["merged", "conflict", "merged"]
    assert outcomes["c2"]["conflict_files"] == ["shared.txt"]
    s = read_state(repo, "c2")
    assert s["status"] == "conflict" and "shared.txt" in s["error_message"] and s["conflict_files"] == ["shared.txt"]
    assert (repo / "shared.txt").read_text() == "from c1\n"
    assert not (repo / ".git" / "MERGE_HEAD").exists()


def test_a_lone_conflict_leaves_base_and_checkout_byte_for_byte(repo):
    commit_file(repo, "shared.txt", "base\n")
    git(repo, "push", "-q", "origin", "main")
    agent(repo, "x1", {"shared.txt": "agent\n"})
    commit_file(repo, "shared.txt", "main moved\n")
    before_ref, before_bytes = git(repo, "rev-parse", "main"), (repo / "shared.txt").read_bytes()
    before_index = (repo / ".git" / "index").read_bytes()
    out = inv(repo, "merge", "--adw-id", "x1")
    assert out.returncode == 1 and "conflict" in out.stdout
    assert git(repo, "rev-parse", "main") == before_ref
    assert (repo / "shared.txt").read_bytes() == before_bytes
    assert (repo / ".git" / "index").read_bytes() == before_index


def test_validation_failure_rolls_back(repo):
    agent(repo, "v1", {"good.txt": "ok\n"})
    agent(repo, "v2", {"bad.txt": "breaks the build\n"})
    before = git(repo, "rev-parse", "main")
    out = inv(repo, "merge", "--adw-id", "v2", "--adw-id", "v1", "--validate", "test ! -f bad.txt || { echo broken; exit 7; }",
              "--json")
    results = {r["adw_id"]: r for r in json.loads(out.stdout)["results"]}
    assert out.returncode == 1
    assert results["v2"]["outcome"] == "validation_failed" and results["v2"]["exit_code"] == 7
    assert results["v1"]["outcome"] == "merged"
    s = read_state(repo, "v2")
    assert s["status"] == "failed" and "exited 7" in s["error_message"] and "broken" in s["error_message"]
    assert not (repo / "bad.txt").exists() and (repo / "good.txt").exists()
    assert git(repo, "merge-base", "--is-ancestor", before, "main") == ""


def test_strategies_produce_the_expected_history(repo):
    for strategy in ("no-ff", "squash", "rebase"):
        wt = agent(repo, f"s-{strategy}", {f"{strategy}-1.txt": "1\n", f"{strategy}-2.txt": "2\n"})
        commit_file(repo, f"main-{strategy}.txt", "main moves on\n")  # so rebase has something to do
        before = git(repo, "rev-parse", "main")
        inv_json(repo, "merge", "--adw-id", f"s-{strategy}", "--strategy", strategy)
        new = git(repo, "rev-list", f"{before}..main").split()
        parents = [len(git(repo, "rev-list", "--parents", "-n1", c).split()) - 1 for c in new]
        if strategy == "no-ff":
            assert len(new) == 3 and sorted(parents) == [1, 1, 2]
        elif strategy == "squash":
            assert len(new) == 1 and parents == [1]
        else:
            assert len(new) == 2 and parents == [1, 1]
            assert git(repo, "rev-parse", "main~2") == before, "rebased linearly onto the moved main"
        assert (repo / f"{strategy}-2.txt").exists()
        assert read_state(repo, f"s-{strategy}")["status"] == "merged"
        # A squash- or rebase-merged branch counts as merged: teardown may delete it without --force.
        inv(repo, "teardown", "--adw-id", f"s-{strategy}", "--delete-branch", check=True)
        assert not wt.exists()


def test_dirty_main_checkout_on_base_is_refused_untouched(repo):
    agent(repo, "d1", {"d.txt": "d\n"})
    (repo / "README.md").write_text("my unsaved edit\n")
    before = git(repo, "rev-parse", "main")
    out = inv(repo, "merge", "--adw-id", "d1")
    assert out.returncode == 1 and "uncommitted changes" in out.stderr and "nothing was merged" in out.stderr
    assert (repo / "README.md").read_text() == "my unsaved edit\n"
    assert git(repo, "rev-parse", "main") == before and read_state(repo, "d1")["status"] == "completed"


def test_user_on_another_branch_is_not_touched(repo):
    agent(repo, "o1", {"o.txt": "o\n"})
    git(repo, "checkout", "-q", "-b", "mine")
    (repo / "scratch.txt").write_text("untracked work\n")
    inv_json(repo, "merge", "--adw-id", "o1")
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "mine" and not (repo / "o.txt").exists()
    assert git(repo, "show", "main:o.txt") == "o"


def test_generated_files_never_enter_a_merge(repo):
    wt = agent(repo, "leak", {}, status="created")
    git(wt, "add", "-f", ".ports.env")
    git(wt, "commit", "-q", "-m", "oops")
    state.set_status(settings_for(repo), "leak", "completed")
    out = inv(repo, "merge", "--adw-id", "leak", "--json")
    result = json.loads(out.stdout)["results"][0]
    assert result["outcome"] == "validation_failed" and ".ports.env" in result["reason"]
    assert "ports.env" not in git(repo, "ls-tree", "-r", "--name-only", "main")


def test_two_merges_started_together_both_land(repo):
    agent(repo, "p1", {"p1.txt": "1\n"})
    agent(repo, "p2", {"p2.txt": "2\n"})
    procs = [subprocess.Popen([*cli(), "merge", "--adw-id", i, "--json"], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in ("p1", "p2")]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    files = git(repo, "ls-tree", "--name-only", "main")
    assert "p1.txt" in files and "p2.txt" in files


def test_dry_run_predicts_real_outcomes_and_changes_nothing(repo):
    agent(repo, "r1", {"shared.txt": "r1\n"})
    agent(repo, "r2", {"shared.txt": "r2\n"})
    agent(repo, "r3", {"r3.txt": "r3\n"})
    refs = git(repo, "for-each-ref")
    predicted = inv(repo, "merge", "--all", "--dry-run", "--json")
    assert git(repo, "for-each-ref") == refs and read_state(repo, "r1")["status"] == "completed"
    real = inv(repo, "merge", "--all", "--json")
    pick = lambda out: [(r["adw_id"], r["outcome"], r["conflict_files"]) for r in json.loads(out.stdout)["results"]]
    assert pick(predicted) == pick(real) == [("r1", "merged", []), ("r2", "conflict", ["shared.txt"]),
                                             ("r3", "merged", [])]


def test_two_clones_merge_and_push_at_once_and_nothing_is_lost(repo, tmp_path):
    other = tmp_path / "clone2"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(other))
    for name in ("x1", "x2"):
        agent(repo, name, {f"{name}.txt": name})
    for name in ("y1", "y2"):
        agent(other, name, {f"{name}.txt": name})
    procs = [subprocess.Popen([*cli(), "merge", "--all", "--push", "--json"], cwd=where,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for where in (repo, other)]
    codes = [p.wait(timeout=180) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    origin = tmp_path / "origin.git"
    files = git(origin, "ls-tree", "--name-only", "main").split()
    assert {"x1.txt", "x2.txt", "y1.txt", "y2.txt"} <= set(files)
    # Each clone's local main ends equal to what the remote accepted from it (or later).
    for where in (repo, other):
        assert git(origin, "merge-base", "--is-ancestor", git(where, "rev-parse", "main"), "main") == ""


def test_merge_cleanup_tears_down_merged_agents(repo):
    agent(repo, "m1", {"m1.txt": "1\n"})
    summary = inv_json(repo, "merge", "--adw-id", "m1", "--cleanup")
    assert summary["results"][0]["cleanup"]["branch_action"] == "deleted"
    assert not (repo / "trees/m1").exists() and "adw/m1" not in git(repo, "branch")


# -- issue 10, defect 7: publishing is one consistent step ------------------------------------
# Each test moves something under the merge while it runs (from the validate command, or from a
# pre-push hook), then checks that the exit code, the JSON summary, the remote, the local base
# and the states all tell the same story.


def once(marker: Path, command: str) -> str:
    """A shell snippet that runs ``command`` the first time only (the redo must not repeat it)."""
    return f"if [ ! -e {shlex.quote(str(marker))} ]; then touch {shlex.quote(str(marker))}; {command}; fi"


@pytest.mark.parametrize("push", [True, False])
def test_local_base_moved_during_validation_redoes_the_queue_on_the_new_tip(repo, tmp_path, push):
    agent(repo, "lb1", {"lb1.txt": "1\n"})
    user_commit = f"git -C {shlex.quote(str(repo))} commit -q --allow-empty -m 'user: meanwhile'"
    out = inv(repo, "merge", "--adw-id", "lb1", *(["--push"] if push else []), "--json",
              "--validate", once(tmp_path / "moved", user_commit))
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    main = git(repo, "rev-parse", "main")
    assert summary["attempts"] == 2 and summary["errors"] == [] and summary["base_after"] == main
    assert summary["results"][0]["outcome"] == "merged" and summary["results"][0]["status"] == "merged"
    assert git(repo, "log", "-1", "--format=%s", "main^1") == "user: meanwhile", "the user's commit is kept"
    assert git(repo, "status", "--porcelain") == "" and (repo / "lb1.txt").exists(), "the checkout came along"
    assert read_state(repo, "lb1")["status"] == "merged"
    if push:
        assert summary["pushed"] and git(repo, "rev-parse", "origin/main") == main
        assert git(repo.parent / "origin.git", "rev-parse", "main") == main


def test_a_checkout_of_the_base_made_during_the_run_is_brought_along(repo, tmp_path):
    agent(repo, "co1", {"co1.txt": "1\n"})
    git(repo, "checkout", "-q", "-b", "mine")
    out = inv(repo, "merge", "--adw-id", "co1", "--json",
              "--validate", once(tmp_path / "checked-out", f"git -C {shlex.quote(str(repo))} checkout -q main"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "rev-parse", "HEAD") == json.loads(out.stdout)["base_after"]
    # Not moved by update-ref under the checkout: index and files are at the merged tip too.
    assert git(repo, "status", "--porcelain") == "" and (repo / "co1.txt").read_text() == "1\n"


def test_a_status_changed_during_the_merge_never_raises_and_lands_in_history(repo):
    agent(repo, "st1", {"st1.txt": "1\n"})
    agent(repo, "st2", {"st2.txt": "2\n"})
    change = " ".join(shlex.quote(a) for a in [*cli(), "status", "--adw-id", "st1", "--set", "in_progress"])
    out = inv(repo, "merge", "--adw-id", "st1", "--adw-id", "st2", "--json",
              "--validate", f'[ "$ADW_ID" != st1 ] || {change} >/dev/null')
    assert out.returncode == 1, "exit 1: something needs attention; never 2 after the base moved"
    summary = json.loads(out.stdout)
    results = {r["adw_id"]: r for r in summary["results"]}
    assert results["st1"]["outcome"] == "merged" and results["st1"]["status"] == "in_progress"
    assert results["st2"]["status"] == "merged"
    assert len(summary["errors"]) == 1 and "st1" in summary["errors"][0]
    assert summary["base_after"] == git(repo, "rev-parse", "main") and (repo / "st1.txt").exists()
    s = read_state(repo, "st1")
    assert s["status"] == "in_progress"
    assert s["history"][-1]["merge"] == "merged" and s["history"][-1]["merged_commit"] == results["st1"]["merged_commit"]


def test_a_cleanup_failure_is_reported_in_the_summary_and_replaces_nothing(repo):
    from grove.core import locks

    agent(repo, "cl1", {"cl1.txt": "1\n"})
    agent(repo, "cl2", {"cl2.txt": "2\n"})
    settings = settings_for(repo)
    with locks.locked(settings.lock_path("op-cl2"), 0, "test holds it"):  # cl2's teardown cannot start
        out = inv(repo, "merge", "--adw-id", "cl1", "--adw-id", "cl2", "--cleanup", "--json")
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    results = {r["adw_id"]: r for r in summary["results"]}
    assert [r["outcome"] for r in summary["results"]] == ["merged", "merged"]
    assert results["cl1"]["cleanup"]["branch_action"] == "deleted" and not (repo / "trees/cl1").exists()
    assert "error" in results["cl2"]["cleanup"] and (repo / "trees/cl2").exists()
    assert len(summary["errors"]) == 1 and "cl2" in summary["errors"][0]
    assert read_state(repo, "cl2")["status"] == "merged"
    assert {"cl1.txt", "cl2.txt"} <= set(git(repo, "ls-tree", "--name-only", "main").split())


def test_local_base_moved_during_the_push_is_said_not_misreported(repo, tmp_path):
    agent(repo, "pp1", {"pp1.txt": "1\n"})
    git(repo, "checkout", "-q", "-b", "mine")
    hook = repo / ".git/hooks/pre-push"
    hook.write_text("#!/bin/sh\n" + once(tmp_path / "hooked", "c=$(git commit-tree -p refs/heads/main "
                    "-m 'user: during the push' 'refs/heads/main^{tree}') && git update-ref refs/heads/main $c")
                    + "\n")
    hook.chmod(0o755)
    out = inv(repo, "merge", "--adw-id", "pp1", "--push", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    origin = git(repo.parent / "origin.git", "rev-parse", "main")
    assert summary["pushed"] and summary["base_after"] == origin, "the remote has the merge, and says so"
    assert summary["results"][0]["outcome"] == "merged" and read_state(repo, "pp1")["status"] == "merged"
    local = git(repo, "rev-parse", "main")
    assert git(repo, "log", "-1", "--format=%s", local) == "user: during the push", "the user's commit is untouched"
    assert len(summary["errors"]) == 1 and "git pull --rebase" in summary["errors"][0]


def test_merge_never_exits_2_once_something_changed(repo):
    """Every exit-2 path is bad input found before the first change; the ones after it are 1."""
    agent(repo, "e2", {"e2.txt": "1\n"})
    out = inv(repo, "merge", "--adw-id", "e2", "--json", "--base", "no-such-base")
    assert out.returncode == 2 and read_state(repo, "e2")["status"] == "completed"
    assert "no-such-base" not in git(repo, "branch")


def test_a_base_reset_backwards_during_validation_is_respected_not_undone(repo, tmp_path):
    dropped = commit_file(repo, "dropped.txt", "the user will drop this\n")  # not pushed:
    agent(repo, "rb1", {"rb1.txt": "1\n"})  # so the agent starts from origin/main, without it
    reset = f"git -C {shlex.quote(str(repo))} reset -q --hard HEAD~1"
    out = inv(repo, "merge", "--adw-id", "rb1", "--json", "--validate", once(tmp_path / "reset", reset))
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    assert summary["attempts"] == 2 and summary["base_after"] == git(repo, "rev-parse", "main")
    assert subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", dropped, "main"]).returncode == 1
    assert (repo / "rb1.txt").exists() and not (repo / "dropped.txt").exists()


def test_a_merge_never_overwrites_an_ignored_file_in_the_user_s_checkout(repo):
    """Second review: `git merge --ff-only` silently replaces ignored files in the checkout of the base."""
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "local.db\n")
    git(repo, "commit", "-qam", "ignore local.db")
    (repo / "local.db").write_text("USER PRECIOUS LOCAL DB\n")
    wt = agent(repo, "ig", {}, status="created")
    (wt / "local.db").write_text("agent fixture\n")
    git(wt, "add", "-f", "local.db")
    git(wt, "commit", "-qm", "fixture")
    state.set_status(settings_for(repo), "ig", "completed")
    before = git(repo, "rev-parse", "main")
    out = inv(repo, "merge", "--adw-id", "ig", "--json")
    assert out.returncode == 1 and "local.db" in out.stdout + out.stderr
    assert (repo / "local.db").read_text() == "USER PRECIOUS LOCAL DB\n"
    assert git(repo, "rev-parse", "main") == before, "the base did not move under the checkout"


@pytest.mark.parametrize("push", [False, True])
def test_a_checkout_of_the_base_that_cannot_follow_is_said(repo, push):
    """Issue 25: `git merge --ff-only` in the user's checkout fails (an untracked file of the user's
    is where the merge adds one: git refuses, and it is neither dirty nor ignored). What merge
    reports must match the truth: the checkout and the local base did not move."""
    agent(repo, "ff1", {"ff1.txt": "the agent's\n"})
    (repo / "ff1.txt").write_text("the user's own, untracked\n")
    before = git(repo, "rev-parse", "main")
    out = inv(repo, "merge", "--adw-id", "ff1", "--json", *(["--push"] if push else []))
    assert out.returncode == 1, out.stdout + out.stderr
    assert (repo / "ff1.txt").read_text() == "the user's own, untracked\n"
    assert git(repo, "rev-parse", "main") == before and git(repo, "status", "--porcelain") == "?? ff1.txt"
    said = json.loads(out.stdout)
    if not push:  # nothing published: an error document, and nothing was merged
        assert "could not bring" in said["error"] and "nothing was merged" in said["error"]
        assert read_state(repo, "ff1")["status"] == "completed"
        return
    origin = git(repo.parent / "origin.git", "rev-parse", "main")
    assert said["pushed"] and said["base_after"] == origin != before, "the remote has the merge"
    assert len(said["errors"]) == 1 and "local main was left at" in said["errors"][0]
    assert "could not bring" in said["errors"][0] and "git pull --rebase" in said["errors"][0]


def test_moving_the_local_base_is_a_compare_and_swap(repo):
    """Issue 25, the CAS from another angle: the base moved from ``old`` to a commit of the user's
    that the merge lacks; moving it must refuse, with or without a checkout of the base, and keep it."""
    from grove.ops import merge

    settings = settings_for(repo)
    old = git(repo, "rev-parse", "main")
    new = commit_file(repo, "merged.txt", "the merge\n")
    git(repo, "reset", "-q", "--hard", old)
    for where in ("checked out", "not checked out"):
        if where == "not checked out":
            git(repo, "checkout", "-q", "-b", "elsewhere")
        users = git(repo, "commit-tree", "-p", old, "-m", f"user's, {where}", f"{old}^{{tree}}")
        git(repo, "update-ref", "refs/heads/main", users)
        if where == "checked out":
            git(repo, "reset", "-q", "--hard", users)
        moved, why = merge._move_local(settings, "main", old, new, pushed=False)
        assert not moved and "moved during the merge" in why, why
        assert git(repo, "rev-parse", "main") == users, f"the user's commit stays the base ({where})"
        git(repo, "checkout", "-q", "main") if where == "not checked out" else None
