"""`grove adopt PATH`: a worktree made by plain git becomes a Grove agent (issue 22, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import commit_file, git, inv, inv_json, snapshot


def with_config(repo):
    """A tracked .mcp.json naming a path in the main checkout (Grove repoints and hides it) and an
    ignored .env with a secret (Grove copies it with the ports laid over)."""
    commit_file(repo, ".mcp.json", json.dumps({"mcpServers": {"x": {"args": [str(repo / "cfg.json")]}}}) + "\n")
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + ".env\n")
    git(repo, "commit", "-qam", "ignore .env")
    git(repo, "push", "-q", "origin", "main")
    (repo / ".env").write_text("API_KEY=s3cret\n")
    return repo


def owned_branches(repo):
    journal = repo / "agents/.grove/owned.json"
    return set(json.loads(journal.read_text())["branch"]) if journal.exists() else set()


def test_adopt_a_worktree_outside_trees_then_merge_and_teardown_leave_it_in_place(repo, tmp_path):
    with_config(repo)
    outside = tmp_path / "elsewhere" / "feature x"  # a space in the path: no shell anywhere
    git(repo, "worktree", "add", "-q", "-b", "feat/x", str(outside), "main")
    commit_file(outside, "feature.txt", "the user's commit\n")
    (outside / "notes.txt").write_text("the user's own uncommitted file\n")
    before = snapshot(repo)
    plan = inv_json(repo, "adopt", str(outside), "--dry-run")
    assert (plan["adw_id"], plan["action"], plan["branch"]) == ("feature-x", "adopt", "feat/x")
    assert snapshot(repo) == before and not (outside / ".ports.env").exists()  # nothing changed
    s = inv_json(repo, "adopt", str(outside))
    assert s["adw_id"] == "feature-x" and s["adopted"] is True and s["branch"] == "feat/x"
    assert s["worktree_path"] == os.path.realpath(outside) and s["status"] == "created"
    assert s["backend_port"] and s["commits"] == [] and s["base_commit"] == git(repo, "rev-parse", "main")
    assert f"BACKEND_PORT={s['backend_port']}" in (outside / ".ports.env").read_text()
    assert "API_KEY=s3cret" in (outside / ".env").read_text()
    assert json.loads((outside / ".mcp.json").read_text())["mcpServers"]["x"]["args"] == [str(outside / "cfg.json")]
    assert s["hidden_by_grove"] == [".mcp.json"]
    assert git(outside, "status", "--porcelain") == "?? notes.txt"  # Grove's files stay out of `git add -A`
    assert "feat/x" not in owned_branches(repo)  # not Grove's: never deleted by Grove
    assert (outside / "notes.txt").read_text() == "the user's own uncommitted file\n"
    # An ordinary agent: listed, run with its ports, merged.
    assert [r["adw_id"] for r in inv_json(repo, "list")] == ["feature-x"]
    ran = inv(repo, "run", "--adw-id", "feature-x", "--", sys.executable, "-c",
              "import os; print(os.environ['BACKEND_PORT']); print(os.getcwd())", check=True)
    assert ran.stdout.splitlines() == [str(s["backend_port"]), os.path.realpath(outside)]
    again = inv_json(repo, "adopt", str(outside))  # idempotent
    assert again["adw_id"] == "feature-x" and again["slot"] == s["slot"]
    inv(repo, "status", "--adw-id", "feature-x", "--set", "completed", check=True)
    # Uncommitted work is never merged over (issue 20, item 7): the user's notes.txt holds it back.
    held = inv(repo, "merge", "--adw-id", "feature-x", "--json")
    assert held.returncode == 1 and json.loads(held.stdout)["results"][0]["uncommitted"] == ["notes.txt"]
    (outside / "notes.txt").rename(tmp_path / "notes.txt")
    merged = inv_json(repo, "merge", "--adw-id", "feature-x")
    (tmp_path / "notes.txt").rename(outside / "notes.txt")
    assert merged["results"][0]["outcome"] == "merged"
    assert git(repo, "show", "main:feature.txt") == "the user's commit"
    # Teardown: Grove's resources go, the user's worktree and branch stay.
    torn = inv_json(repo, "teardown", "--adw-id", "feature-x", "--delete-branch")
    assert torn["worktree_kept"] == os.path.realpath(outside) and torn["worktree_removed"] is None
    assert torn["branch_action"] == "kept" and "not created by Grove" in torn["branch_note"]
    assert git(repo, "rev-parse", "--verify", "refs/heads/feat/x")
    assert outside.is_dir() and (outside / "notes.txt").read_text() == "the user's own uncommitted file\n"
    assert git(outside, "ls-files", "-v", ".mcp.json").startswith("H ")  # un-hidden
    assert json.loads((outside / ".mcp.json").read_text())["mcpServers"]["x"]["args"] == [str(repo / "cfg.json")]
    assert git(outside, "status", "--porcelain") == "?? notes.txt"
    assert inv_json(repo, "list") == [] and torn["freed_slots"]
    created, adopted = inv_json(repo, "events")[:2]
    assert (created["event"], created["details"]["adopted"], adopted["event"]) == ("created", True, "adopted")


def test_adopt_inside_trees_is_a_normal_agent_whose_teardown_salvages(repo):
    wt = repo / "trees" / "mine"
    git(repo, "worktree", "add", "-q", "-b", "mine-branch", str(wt), "main")
    before = snapshot(repo)
    other = inv(repo, "adopt", str(wt), "--adw-id", "other")
    assert other.returncode == 2 and "can only be adopted as 'mine'" in other.stderr
    assert snapshot(repo) == before
    s = inv_json(repo, "adopt", str(wt), "--no-install")
    assert (s["adw_id"], s["worktree_path"], s["adopted"]) == ("mine", str(wt), True)
    commit_file(wt, "work.txt", "committed\n")
    (wt / "draft.txt").write_text("uncommitted\n")
    refused = inv(repo, "teardown", "--adw-id", "mine")
    assert refused.returncode == 2 and wt.is_dir()  # unfinished: --force needed
    torn = inv_json(repo, "teardown", "--adw-id", "mine", "--force", "--delete-branch")
    assert torn["worktree_removed"] == str(wt) and not wt.exists()
    assert git(repo, "show", f"{torn['salvage_ref']}:draft.txt") == "uncommitted"
    assert torn["branch_action"] == "kept" and git(repo, "show", "mine-branch:work.txt") == "committed"


def test_adopt_refuses_what_is_not_an_adoptable_worktree(repo, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    detached = tmp_path / "detached"
    git(repo, "worktree", "add", "-q", "--detach", str(detached), "main")
    on_main = tmp_path / "on-main"
    git(repo, "worktree", "add", "-q", "-b", "side", str(on_main), "main")
    before = snapshot(repo)
    for path, said in ((plain, "is not a worktree of"), (repo, "is the main checkout"),
                       (detached, "detached HEAD"), (tmp_path / "missing", "is not a directory")):
        out = inv(repo, "adopt", str(path))
        assert out.returncode == 2 and said in out.stderr, out.stderr
    taken = inv_json(repo, "adopt", str(on_main), "--adw-id", "a1", "--no-install")
    assert taken["adw_id"] == "a1"
    again = inv(repo, "adopt", str(on_main), "--adw-id", "a2")
    assert again.returncode == 2 and "already agent a1" in again.stderr
    assert snapshot(repo)["refs"] == before["refs"]


def test_init_git_hook_adopts_each_new_worktree_and_leaves_other_checkouts_alone(repo, tmp_path):
    out = inv(repo, "init", "--git-hook", check=True)
    hook = repo / ".git/hooks/post-checkout"
    assert "added Grove's post-checkout hook" in out.stdout and os.access(hook, os.X_OK)
    assert "already present" in inv(repo, "init", "--git-hook", check=True).stdout
    wt = tmp_path / "by-git"
    added = subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "by-git", str(wt), "main"],
                           capture_output=True, text=True, timeout=300)
    assert added.returncode == 0, added.stderr
    s = inv_json(repo, "status", "--adw-id", "by-git")
    assert s["adopted"] is True and s["worktree_path"] == os.path.realpath(wt) and (wt / ".ports.env").is_file()
    # A checkout in the main worktree, and Grove's own setup (`worktree add --no-checkout`), adopt nothing.
    git(repo, "checkout", "-q", "-b", "elsewhere")
    git(repo, "checkout", "-q", "main")
    made = inv_json(repo, "setup", "--adw-id", "own", "--no-install")
    assert "adopted" not in made
    assert sorted(r["adw_id"] for r in inv_json(repo, "list")) == ["by-git", "own"]
    # A worktree that cannot be adopted (detached) is still made: the hook never fails a checkout.
    detached = subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(tmp_path / "d"),
                               "main"], capture_output=True, text=True, timeout=300)
    assert detached.returncode == 0 and "was not adopted" in detached.stderr and (tmp_path / "d").is_dir()


def test_init_git_hook_never_overwrites_a_hook_of_the_user(repo):
    hook = repo / ".git/hooks/post-checkout"
    hook.write_text("#!/bin/sh\necho mine\n")
    before = snapshot(repo)
    out = inv(repo, "init", "--git-hook")
    assert out.returncode == 2 and "is not Grove's" in out.stderr and hook.read_text() == "#!/bin/sh\necho mine\n"
    assert snapshot(repo) == before  # exit 2: not even .gitignore or .env changed


def test_doctor_calls_an_adopted_agent_healthy_and_a_half_adopted_one_incomplete(repo, tmp_path):
    """Adopt records no "worktree" step (the user made the worktree): doctor must not call every
    adopted agent an incomplete setup, and must still see one whose adopt stopped midway."""
    outside = tmp_path / "mine"
    git(repo, "worktree", "add", "-q", "-b", "feat/mine", str(outside), "main")
    inv_json(repo, "adopt", str(outside))
    assert inv_json(repo, "doctor")["problems"] == []
    state_file = repo / "agents" / "mine" / "adw_state.json"
    s = json.loads(state_file.read_text())
    del s["steps"]["install"]  # as if adopt had been killed before its install
    state_file.write_text(json.dumps(s))
    unhealthy = inv(repo, "doctor", "--json")
    [p] = json.loads(unhealthy.stdout)["problems"]
    assert unhealthy.returncode == 1 and p["kind"] == "incomplete_setup" and "adopt" in p["hint"] and str(outside) in p["hint"]
