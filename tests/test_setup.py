"""The setup chain end to end, in real repos with a bare origin (issue 2)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, cli, commit_file, git, inv, inv_json, snapshot, port_leases

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.resources import deps, ports  # noqa: E402


@pytest.fixture
def app(tmp_path, monkeypatch, repo):
    """The seed-shaped sample app, with real uv.lock and bun project (the `repo` fixture sets ports)."""
    return sample_app.build(tmp_path / "sample", deps.find_tool("uv"), deps.find_tool("bun"))


def files_of(root: Path) -> dict[str, bytes]:
    skip = {".git", "node_modules", ".venv"}
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_full_setup_on_seed_shaped_app_and_rerun_changes_nothing(app):
    state = inv_json(app, "setup", "--adw-id", "a1b2c3d4")
    wt = app / "trees" / "a1b2c3d4"
    assert state["status"] == "created" and state["worktree_path"] == str(wt)
    assert state["branch"] == "adw/a1b2c3d4" and state["base_branch"] == "main"
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "adw/a1b2c3d4"
    # No upstream tracking: that is what races on .git/config (DESIGN.md pitfalls).
    assert "branch.adw/a1b2c3d4.merge" not in git(app, "config", "--list")
    slot = ports.preferred_slot("a1b2c3d4", 15)
    backend = int(os.environ["ADW_BACKEND_PORT_BASE"]) + slot
    assert state["slot"] == slot and state["backend_port"] == backend
    assert (wt / ".ports.env").read_text().splitlines()[1:] == [
        f"BACKEND_PORT={backend}", f"FRONTEND_PORT={state['frontend_port']}",
        f"VITE_BACKEND_URL=http://localhost:{backend}", "COMPOSE_PROJECT_NAME=app-a1b2c3d4"]
    env = (wt / ".env").read_text()
    assert f"BACKEND_PORT={backend}\n" in env and "API_KEY=s3cret-value" in env and env.count("BACKEND_PORT=") == 1
    assert stat.S_IMODE((wt / ".env").stat().st_mode) == 0o600
    assert "DB_PATH=app/server/app.db" in (wt / "app/server/.env").read_text()  # from .env.sample
    mcp = json.loads((wt / ".mcp.json").read_text())
    assert mcp["mcpServers"]["playwright"]["args"][-1] == str(wt / "playwright-mcp-config.json")
    assert json.loads((wt / "playwright-mcp-config.json").read_text())["outputDir"] == str(wt / "videos")
    assert (wt / "videos").is_dir()
    assert (wt / "app/server/.venv").is_dir(), "uv sync ran"
    assert (wt / "app/client/node_modules").is_dir() or (wt / "app/client/bun.lock").exists(), "bun install ran"
    assert (wt / "app/server/app.db").is_file(), "reset_db.sh ran in the worktree"
    # Rewritten tracked configs and generated files never show up to `git add -A`.
    assert git(wt, "status", "--porcelain") == ""
    git(wt, "add", "-A")
    assert git(wt, "diff", "--cached", "--name-only") == ""
    for name in ("fetch", "ports", "worktree", "ports_env", "env", "repoint", "install", "db"):
        assert state["steps"][name]["outcome"] in ("done", "skipped"), name
        assert isinstance(state["steps"][name]["seconds"], float)
    # A second setup changes nothing that is already right, byte for byte.
    before = files_of(wt)
    again = inv_json(app, "setup", "--adw-id", "a1b2c3d4")
    assert files_of(wt) == before
    assert (again["slot"], again["branch"], again["created_at"]) == (state["slot"], state["branch"], state["created_at"])


def test_rollback_on_failed_step_leaves_nothing(repo):
    commit_file(repo, "scripts/reset_db.sh", "#!/bin/sh\necho boom >&2\nexit 3\n")
    git(repo, "push", "-q", "origin", "main")
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "x1", "--no-install")
    assert out.returncode == 1
    assert "failed at db" in out.stderr and "boom" in out.stderr and "rolled back" in out.stderr
    after = snapshot(repo)
    assert after["refs"] == before["refs"] and after["worktrees"] == before["worktrees"]
    assert after["registry"] == {} and not (repo / "agents" / "x1").exists() and not (repo / "trees" / "x1").exists()


def test_keep_leaves_everything_marked_failed_and_rerun_recovers(repo):
    script = repo / "scripts" / "reset_db.sh"
    commit_file(repo, "scripts/reset_db.sh", "#!/bin/sh\ntest -f ok || exit 3\n")
    git(repo, "push", "-q", "origin", "main")
    out = inv(repo, "setup", "--adw-id", "k1", "--no-install", "--keep")
    assert out.returncode == 1
    state = json.loads((repo / "agents/k1/adw_state.json").read_text())
    assert state["status"] == "failed" and state["error_message"].startswith("db:")
    assert (repo / "trees/k1").is_dir() and script.exists()
    (repo / "trees/k1/ok").write_text("")
    state = inv_json(repo, "setup", "--adw-id", "k1", "--no-install")
    assert state["status"] == "created" and state["steps"]["db"]["outcome"] == "done"


def test_no_remote_falls_back_to_local_base_and_says_so(tmp_path, monkeypatch):
    from conftest import make_repo

    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "23100")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "23200")
    local = make_repo(tmp_path, remote=False)
    out = inv(local, "setup", "--adw-id", "n1", "--no-install")
    assert out.returncode == 0, out.stderr
    assert git(local / "trees/n1", "rev-parse", "HEAD") == git(local, "rev-parse", "main")


def test_offline_remote_falls_back_with_warning(repo):
    git(repo, "remote", "set-url", "origin", str(repo.parent / "gone.git"))
    out = inv(repo, "setup", "--adw-id", "o1", "--no-install")
    assert out.returncode == 0, out.stderr
    assert "fetch from origin failed" in out.stderr and "using the local main" in out.stderr


def test_fetch_picks_up_new_remote_commits(repo, tmp_path):
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(other))
    tip = commit_file(other, "new.txt", "from elsewhere\n")
    git(other, "push", "-q", "origin", "main")
    state = inv_json(repo, "setup", "--adw-id", "f1", "--no-install")
    assert state["base_commit"] == tip and (repo / "trees/f1/new.txt").exists()


def test_missing_base_branch_is_bad_input(repo):
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "b1", "--base", "nope")
    assert out.returncode == 2 and "base branch 'nope' does not exist" in out.stderr
    assert snapshot(repo) == before


def test_foreign_listening_socket_is_skipped(repo):
    base = int(os.environ["ADW_BACKEND_PORT_BASE"])
    preferred = ports.preferred_slot("sock1", 15)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + preferred))
        holder.listen()
        state = inv_json(repo, "setup", "--adw-id", "sock1", "--no-install")
    assert state["slot"] == (preferred + 1) % 15


def test_a_port_held_on_ipv6_loopback_only_is_busy(repo):
    """Issue 25, the bind probe from another angle: a server listening on ::1 alone (a dev server
    bound to `localhost` that resolved to ::1) holds the port as surely as one on 127.0.0.1."""
    try:
        holder = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("no IPv6 on this machine")
    base = int(os.environ["ADW_BACKEND_PORT_BASE"])
    preferred = ports.preferred_slot("six1", 15)
    with holder:
        holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # 127.0.0.1 stays free
        try:
            holder.bind(("::1", base + preferred))
        except OSError:
            pytest.skip("::1 is not configured on this machine")
        holder.listen()
        assert ports.port_busy(base + preferred)
        state = inv_json(repo, "setup", "--adw-id", "six1", "--no-install")
    assert state["slot"] == (preferred + 1) % 15, "the busy slot is skipped"
    assert not ports.port_busy(base + preferred), "free again once the server is gone"


def test_a_claim_is_dead_only_when_its_process_is(repo):
    """Issue 25, liveness: a setup's claim is a crash leftover only when its process is gone too;
    a live setup that has not yet written its state or worktree keeps its slot. (Issue 23: claims
    are leases in the machine-wide registry; ``stale_reason`` decides.)"""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # an exited (and reaped) process: its pid names no one now
    lease = {"repo": str((repo / ".git").resolve()), "adw_id": "mid-setup", "slot": 0, "ports": {},
             "worktree": str(repo / "trees/mid-setup"), "state": str(repo / "agents/mid-setup/adw_state.json"),
             "pid": os.getpid(), "claimed_at": "2026-01-01T00:00:00Z"}
    assert ports.stale_reason(lease) is None, "its setup is running"
    assert ports.stale_reason(dict(lease, pid=child.pid)) == "worktree gone", "its setup died before making anything"
    assert ports.stale_reason(dict(lease, pid=child.pid, explicit=True)) is None, "held until released"


def test_all_slots_taken_exits_1_naming_holders(repo):
    env = {"ADW_PORT_SLOTS": "2", "ADW_PORT_OVERFLOW": ""}  # overflow off: the slots are all there is
    inv(repo, "setup", "--adw-id", "s1", "--no-install", env=env, check=True)
    inv(repo, "setup", "--adw-id", "s2", "--no-install", env=env, check=True)
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "s3", "--no-install", env=env)
    assert out.returncode == 1 and "no free slot" in out.stderr and "s1" in out.stderr and "s2" in out.stderr
    assert snapshot(repo) == before


def test_thirty_concurrent_setups_get_distinct_ports(repo):
    env = dict(os.environ, ADW_PORT_SLOTS="30")
    procs = [subprocess.Popen([*cli(), "setup", "--adw-id",
                               f"c{i:02d}", "--no-install", "--quiet"], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(30)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    assert [r for r, _ in results] == [0] * 30, [e for r, e in results if r]
    states = [json.loads((repo / f"agents/c{i:02d}/adw_state.json").read_text()) for i in range(30)]
    assert len({(s["backend_port"], s["frontend_port"]) for s in states}) == 30
    assert len({s["slot"] for s in states}) == 30
    listed = git(repo, "worktree", "list", "--porcelain")
    assert all(f"trees/c{i:02d}\n" in listed + "\n" for i in range(30))
    assert sorted(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/adw/").split()) == \
        [f"adw/c{i:02d}" for i in range(30)]


def test_several_ids_in_one_call_run_concurrently(repo):
    data = inv_json(repo, "setup", "--adw-id", "m1", "--adw-id", "m2", "--adw-id", "m3", "--no-install")
    assert sorted(s["adw_id"] for s in data["agents"]) == ["m1", "m2", "m3"] and data["errors"] == []
    assert len({s["slot"] for s in data["agents"]}) == 3


def test_epic_and_task_name_the_branch_and_generate_the_id(repo):
    data = inv_json(repo, "setup", "--epic", "TASK-001", "--task", "Backend API Implementation", "--count", "2",
                    "--no-install")
    names = sorted(s["branch"] for s in data["agents"])
    for s in data["agents"]:
        assert len(s["adw_id"]) == 8 and int(s["adw_id"], 16) >= 0
        assert s["branch"] == f"feature/TASK-001/backend-api-implementation-{s['adw_id']}"
        assert (s["epic_id"], s["task_name"]) == ("TASK-001", "Backend API Implementation")
    assert names[0] != names[1]


def test_branch_of_someone_else_is_refused(repo):
    git(repo, "branch", "adw/taken")
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "taken")
    assert out.returncode == 2 and "already exists" in out.stderr
    assert snapshot(repo) == before


def test_teardown_keeps_unmerged_branch_and_backs_up_when_forced(repo):
    inv(repo, "setup", "--adw-id", "t1", "--no-install", check=True)
    tip = commit_file(repo / "trees/t1", "work.txt", "agent work\n")
    inv(repo, "status", "--adw-id", "t1", "--set", "completed", check=True)
    out = inv(repo, "teardown", "--adw-id", "t1", "--delete-branch")
    assert out.returncode == 1 and "not in" in out.stderr
    assert (repo / "trees/t1").is_dir(), "refused before changing anything"
    result = inv_json(repo, "teardown", "--adw-id", "t1", "--delete-branch", "--force")
    assert result["backup_ref"].startswith("refs/grove-backup/adw/t1/")
    assert git(repo, "rev-parse", result["backup_ref"]) == tip
    assert not (repo / "trees/t1").exists() and not (repo / "agents/t1").exists()
    archived = json.loads(Path(result["state_archive"]).read_text())
    assert archived["status"] == "cleaned" and archived["cleaned_at"]
    assert port_leases(repo) == {}


def test_teardown_refuses_uncommitted_changes(repo):
    inv(repo, "setup", "--adw-id", "d1", "--no-install", check=True)
    (repo / "trees/d1/draft.txt").write_text("not committed\n")
    inv(repo, "status", "--adw-id", "d1", "--set", "failed", check=True)
    out = inv(repo, "teardown", "--adw-id", "d1")
    assert out.returncode == 1 and "uncommitted changes: draft.txt" in out.stderr
    assert (repo / "trees/d1/draft.txt").exists()


def test_teardown_never_follows_a_symlink_out_of_trees(repo, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine\n")
    (repo / "trees").mkdir()
    os.symlink(outside, repo / "trees" / "evil")
    out = inv(repo, "teardown", "--adw-id", "evil", "--force")
    assert out.returncode in (1, 2)
    assert (outside / "keep.txt").read_text() == "mine\n"


def test_clean_worktrees_keeps_unmerged_work(repo):
    inv(repo, "setup", "--adw-id", "w1", "--adw-id", "w2", "--no-install", check=True)
    tip = commit_file(repo / "trees/w1", "work.txt", "unmerged\n")
    for agent in ("w1", "w2"):
        inv(repo, "status", "--adw-id", agent, "--set", "completed", check=True)
    out = subprocess.run(["make", "-s", "-C", str(GROVE), "clean-worktrees"], env=dict(os.environ, ADW_REPO=str(repo)),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "kept w1: branch adw/w1 has unmerged commits" in out.stdout
    assert git(repo, "rev-parse", "adw/w1") == tip
    assert "adw/w2" not in git(repo, "branch", "--list", "adw/w2")
    assert not (repo / "trees/w1").exists() and not (repo / "trees/w2").exists()


def test_ignore_warning_points_at_init(tmp_path, monkeypatch):
    from conftest import make_repo

    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "23300")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "23400")
    bare = make_repo(tmp_path, gitignore=False)
    out = inv(bare, "setup", "--adw-id", "g1", "--no-install")
    assert out.returncode == 0 and "trees/ is not git-ignored" in out.stderr and " init" in out.stderr
    # Even so, nothing Grove generated can be picked up by `git add -A` in the worktree.
    assert git(bare / "trees/g1", "status", "--porcelain") == ""
    inv(bare, "init", check=True)
    inv(bare, "init", check=True)
    # Issue 21: the rules go to .git/info/exclude, once; no tracked file and no .env is written.
    lines = (bare / ".git/info/exclude").read_text().splitlines()
    assert lines.count("/trees/") == 1 and lines.count(".ports.env") == 1
    assert not (bare / ".gitignore").exists() and not (bare / ".env").exists()
    assert git(bare, "status", "--porcelain") == ""


def test_worktreeinclude_copies_exactly_what_it_lists(repo):
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "local/\n*.key\nbig/\n")
    (repo / ".worktreeinclude").write_text("local/\n*.key\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "include list")
    git(repo, "push", "-q", "origin", "main")
    (repo / "local").mkdir()
    (repo / "local/tool.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(repo / "local/tool.sh", 0o755)
    os.symlink("tool.sh", repo / "local/link")
    (repo / "dev.key").write_text("k\n")
    (repo / "big").mkdir()
    (repo / "big/blob.bin").write_text("not listed\n")
    (repo / "untracked-not-ignored.key.txt").write_text("not ignored\n")
    state = inv_json(repo, "setup", "--adw-id", "inc", "--no-install")
    wt = repo / "trees/inc"
    assert state["steps"]["include"]["outcome"] == "done"
    assert (wt / "local/tool.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert os.access(wt / "local/tool.sh", os.X_OK), "exec bit kept"
    assert os.readlink(wt / "local/link") == "tool.sh", "symlink kept as a symlink"
    assert (wt / "dev.key").exists() and not (wt / "big").exists()
    assert not (wt / "untracked-not-ignored.key.txt").exists() and not (wt / "trees").exists()
    assert git(wt, "status", "--porcelain") == ""
