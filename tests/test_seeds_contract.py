"""The two seed documents, checked from the outside: their usage examples run almost verbatim
against a real repo with a bare origin, from the repo's own directory (the seed passes no
project_root), and against `inv -r <grove>`; the DESIGN.md contract where it pins a seed detail."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from conftest import git, inv, inv_json

from grove import (cleanup_abandoned_worktrees, cleanup_epic_worktrees, cleanup_worktree,
                   create_worktree_for_agent, get_all_git_worktrees, get_worktree_metadata,
                   list_archived_worktrees, list_worktrees, update_worktree_status)


@pytest.fixture
def here(repo, monkeypatch):
    """The seed's examples run from the repository itself."""
    monkeypatch.chdir(repo)
    return repo


def create(epic: str, task: str, **kw):
    return create_worktree_for_agent(epic, task, install=False, db=False, **kw)


def commit_in(path: Path, name: str, message: str) -> None:
    # The seed's Pattern 2, verbatim apart from the file it writes.
    (path / name).write_text(message + "\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"Implement: {message}"], cwd=path, check=True)


# --- defects -------------------------------------------------------------------------------------

def test_slot_is_sha256_of_the_id_modulo_15(repo):
    """Seed 000 "slot = hash(adw_id) % 15"; DESIGN: the hash is sha256 (README: sha256(X) mod 15)."""
    for adw_id in ("a1", "a1b2c3d4"):
        state = inv_json(repo, "setup", "--adw-id", adw_id, "--no-install", "--no-fetch")
        expected = int(hashlib.sha256(adw_id.encode()).hexdigest(), 16) % 15
        assert state["slot"] == expected, f"{adw_id}: slot {state['slot']}, sha256 mod 15 is {expected}"
        assert state["backend_port"] - state["slot"] == state["frontend_port"] - state["slot"] - 50


def test_missing_base_branch_is_the_seed_s_runtime_error(here):
    """Seed 004 "Worktree Creation Failure": `except RuntimeError` catches a base branch that does
    not exist. Grove's documented ValueError-for-bad-input must not break the seed's handler."""
    with pytest.raises(RuntimeError) as caught:
        create("TASK-001", "API", base_branch="no-such-base")
    assert isinstance(caught.value, ValueError), "still a ValueError, as README documents for bad input"
    assert list_worktrees() == []


def test_status_cleaned_is_not_a_label_over_a_live_worktree(here):
    """Seed 004: `cleaned` means "Worktree removed and archived". Setting it by hand over a live
    worktree leaves one that cleanup_epic_worktrees, gc and doctor all skip as gone."""
    meta = create("TASK-001", "API")
    update_worktree_status(meta.name, "completed")
    with pytest.raises(ValueError, match="recorded by a teardown"):
        update_worktree_status(meta.name, "cleaned")
    out = inv(here, "status", "--adw-id", meta.name, "--set", "cleaned")
    assert out.returncode == 2 and "teardown" in out.stderr
    assert get_worktree_metadata(meta.name).status == "completed" and Path(meta.path).is_dir()


def test_listing_by_an_unknown_status_is_bad_input(here):
    """Seed 004 names the valid statuses; DESIGN: bad input exits 2 with a clear error. A typo such as
    `in-progress` silently reported "No agents" (exit 0) and the API returned []."""
    create("TASK-001", "API")
    with pytest.raises(ValueError, match="in-progress"):
        list_worktrees(status="in-progress")
    out = inv(here, "list", "--status", "in-progress")
    assert out.returncode == 2 and "in_progress" in out.stderr  # names the valid ones
    assert inv(here, "list", "--status", "created", "--json").returncode == 0


# --- what holds (regression for the seed's walkthroughs) -----------------------------------------

def test_seed_004_walkthrough_from_the_repo(here):
    tasks = [("TASK-001", "Backend API Implementation"), ("TASK-001", "Frontend UI Components"),
             ("TASK-001", "Database Schema Migration")]
    made = [create(epic, task, base_branch="main") for epic, task in tasks]
    assert made[0].branch.startswith("feature/TASK-001/backend-api-implementation")
    assert all(m.status == "created" and Path(m.path).is_dir() for m in made)
    assert len(list_worktrees(epic_id="TASK-001")) == 3
    assert [m.name for m in list_worktrees()] == [m.name for m in reversed(made)]  # most recent first
    assert get_worktree_metadata("TASK-001-api-a3f2b1") is None

    api, ui, db = made
    update_worktree_status(api.name, "assigned", agent_id="backend-specialist")
    update_worktree_status(api.name, "in_progress")
    assert [w.name for w in list_worktrees(status="in_progress")] == [api.name]
    commit_in(Path(api.path), "api.py", "Backend API Implementation")
    now = datetime.utcnow()  # the seed's naive UTC
    update_worktree_status(api.name, "completed", completed_at=now)
    got = get_worktree_metadata(api.name)
    assert got.agent_id == "backend-specialist" and len(got.commits) == 1
    assert got.assigned_at is not None and got.created_at <= got.assigned_at
    assert got.completed_at.replace(tzinfo=None) == now.replace(microsecond=0)
    update_worktree_status(ui.name, "failed", error_message="Tests failed: 3 errors")
    assert get_worktree_metadata(ui.name).error_message == "Tests failed: 3 errors"

    with pytest.raises(ValueError):  # "Cleanup Failure": not in a terminal state
        cleanup_worktree(db.name, delete_branch=True)
    (Path(db.path) / "wip.txt").write_text("uncommitted\n")
    cleanup_worktree(db.name, force=True, delete_branch=True)  # nothing lost: salvaged first
    assert git(here, "for-each-ref", f"refs/grove-salvage/{db.name}")

    # Pattern 3: merge in the main checkout, then mark merged and clean up.
    completed = list_worktrees(epic_id="TASK-001", status="completed")
    assert [w.name for w in completed] == [api.name]
    subprocess.run(["git", "checkout", "main"], check=True, capture_output=True)
    subprocess.run(["git", "merge", "--no-ff", completed[0].branch], check=True, capture_output=True)
    update_worktree_status(completed[0].name, "merged")
    cleanup_worktree(completed[0].name, delete_branch=True)
    assert not git(here, "branch", "--list", api.branch)

    assert cleanup_epic_worktrees("TASK-001", delete_branches=True) == 1  # the failed one
    archived = list_archived_worktrees(epic_id="TASK-001")
    assert {w.name for w in archived} == {api.name, ui.name, db.name}
    assert all(w.cleaned_at is not None and w.status == "cleaned" for w in archived)
    assert {w.name: w.merged_at is not None for w in archived}[api.name]
    assert list_worktrees() == []
    assert [w["path"] for w in get_all_git_worktrees()] == [str(here)]


def test_seed_004_conflict_and_abandoned(here):
    done, idle = create("TASK-002", "Done"), create("TASK-002", "Idle")
    update_worktree_status(done.name, "completed")
    update_worktree_status(done.name, "conflict", error_message="Merge conflict: x")
    assert get_worktree_metadata(done.name).status == "conflict"
    update_worktree_status(idle.name, "in_progress")
    assert cleanup_abandoned_worktrees(max_age_days=7) == 0
    assert cleanup_abandoned_worktrees(max_age_days=0) == 1  # only the non-terminal one
    assert [w.name for w in list_worktrees()] == [done.name]
    by_path = {w["path"]: w["branch"] for w in get_all_git_worktrees()}
    assert by_path[str(done.path)] == done.branch


def test_seed_000_layout_ports_env_and_capacity(repo):
    (repo / ".env").write_text("SECRET=1\n")
    state = inv_json(repo, "setup", "--adw-id", "a1", "--no-install")
    tree = repo / "trees" / "a1"
    assert state["worktree_path"] == str(tree) and (repo / "agents/a1/adw_state.json").is_file()
    ports = dict(line.split("=", 1) for line in (tree / ".ports.env").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert ports["BACKEND_PORT"] == str(state["backend_port"])
    assert ports["VITE_BACKEND_URL"] == f"http://localhost:{state['backend_port']}"
    env = (tree / ".env").read_text()
    assert "SECRET=1" in env and f"FRONTEND_PORT={state['frontend_port']}" in env
    more = [arg for i in range(2, 17) for arg in ("--adw-id", f"b{i}")]
    # 15 concurrent instances at most in the seed; issue 23 adds an overflow range past them, which
    # ADW_PORT_OVERFLOW= turns off (tests/test_leases.py covers agent 16 onward with it on).
    out = inv(repo, "setup", *more, "--no-install", "--no-fetch", "--quiet", env={"ADW_PORT_OVERFLOW": ""})
    assert out.returncode == 1 and "no free slot" in out.stderr
    assert inv(repo, "doctor").returncode == 0
    assert inv(repo, "teardown", "--adw-id", "a1", "--force").returncode == 0
    assert not tree.exists()


# --- issue 21: the seed's own orchestrator workflow, verbatim -------------------------------------



def seed_block(text: str, after: str) -> str:
    """The first ```python block after the heading ``after`` in the seed document."""
    return text.split(after, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def seed_004_text() -> str:
    from conftest import GROVE

    for root in (GROVE.parent, GROVE.parent.parent):  # /work/main or /work/clones/NAME beside /work/shared
        path = root / "shared/seeds/004_05da33c26efd3bca.txt"
        if path.is_file():
            return path.read_text()
    pytest.skip("the seed document is not beside this checkout")


def test_seed_004_orchestrator_workflow_runs_as_written(here):
    """Pattern 3's merge_worktree_sequential and the "Integration with Tier 1 Orchestrator" example,
    as the seed writes them (only `from worktree_manager` is `from grove`, the placeholders filled):
    it raised "cannot go from assigned to merged", which escaped the seed's own handler."""
    text = seed_004_text()
    pattern3 = seed_block(text, "### Pattern 3: Sequential Merge After Completion")
    merge_fn = pattern3.split("# Orchestrator merges all completed worktrees")[0].replace("from worktree_manager", "from grove")
    workflow = seed_block(text, "## Integration with Tier 1 Orchestrator")
    assert "update_worktree_status(metadata.name, \"assigned\"" in workflow and "merge_worktree_sequential(wt)" in workflow
    agents_work = "for m in worktrees:\n    work_in(m)\n"
    workflow = workflow.replace("# ... agent execution happens here ...\n", agents_work)

    class Task:
        def __init__(self, name, agent_id):
            self.name, self.agent_id = name, agent_id

    def work_in(meta):
        commit_in(Path(meta.path), f"{meta.name}.txt", f"work of {meta.name}")

    scope = {"create_worktree_for_agent": create_worktree_for_agent, "update_worktree_status": update_worktree_status,
             "cleanup_worktree": cleanup_worktree, "cleanup_epic_worktrees": cleanup_epic_worktrees,
             "epic_id": "TASK-007", "work_in": work_in,
             "parallel_tasks": [Task("Backend API", "backend-specialist"), Task("Frontend UI", "frontend-specialist")]}
    exec(compile(merge_fn, "seed:Pattern 3", "exec"), scope)
    exec(compile(workflow, "seed:Integration with Tier 1 Orchestrator", "exec"), scope)
    merged = [w for w in list_archived_worktrees(epic_id="TASK-007")]
    assert sorted(w.status for w in merged) == ["cleaned", "cleaned"] and all(w.merged_at for w in merged)
    log = git(here, "log", "--format=%s", "main")
    assert log.count("Merge branch 'feature/TASK-007/") == 2 and list_worktrees() == []


def test_merged_is_refused_while_the_branch_is_not_in_the_base(here):
    meta = create("TASK-008", "Unmerged")
    update_worktree_status(meta.name, "assigned", agent_id="a")
    commit_in(Path(meta.path), "x.txt", "not merged yet")
    with pytest.raises(ValueError, match="not in main"):
        update_worktree_status(meta.name, "merged")
    out = inv(here, "status", "--adw-id", meta.name, "--set", "cleaned")
    assert out.returncode == 2
    wrong = inv(here, "status", "--adw-id", meta.name, "--set", "created")
    assert wrong.returncode == 2 and "allowed statuses are: in_progress, completed, failed, conflict;" in wrong.stderr
