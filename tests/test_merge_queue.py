"""The merge queue you can trust with a real test suite (issue 13): a prepared integration worktree,
batch mode with bisection, `inv sync`, the conflict forecast; in real repos with a bare origin."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, commit_file, git, gone, inv, inv_json, kill_if_alive, make_repo, settings_for, port_leases

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.resources import deps  # noqa: E402
from test_merge import agent, read_state  # noqa: E402  (the same in-process agents)


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def grove_venv_env() -> dict:
    """The environment of a user who activated Grove's venv: its bin/ first on PATH, VIRTUAL_ENV set.
    The validate command must not see either (DESIGN.md pitfall: Grove's pytest ran the app's suite)."""
    venv = Path(sys.executable).parent.parent
    return {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}


# -- 1. a prepared integration worktree ---------------------------------------------------------

APP_TEST = '''"""The app's own suite: passes only in a tree prepared like an agent's."""
import os, sqlite3, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def values(path):
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_runs_in_a_prepared_tree():
    assert Path(sys.prefix).resolve() == (ROOT / "app/server/.venv").resolve(), sys.prefix  # its own venv
    ports = values(ROOT / ".ports.env")
    assert os.environ["BACKEND_PORT"] == ports["BACKEND_PORT"]  # exported, as `inv run` does
    assert os.environ["API_KEY"] == "s3cret-value"  # the main checkout's untracked .env, merged in
    server_env = values(ROOT / "app/server/.env")
    assert server_env["DB_PATH"] == "app/server/app.db" and server_env["BACKEND_PORT"] == ports["BACKEND_PORT"]
    with sqlite3.connect(ROOT / server_env["DB_PATH"]) as conn:  # the database step ran
        assert conn.execute("select backend_port from agent").fetchone()[0] == int(ports["BACKEND_PORT"])
    assert os.environ["ADW_BASE_BRANCH"] == "main" and os.environ["ADW_BRANCH"].startswith("adw/")
    assert "ADW_ID" in os.environ
    grove_bin = os.path.realpath(GROVE_BIN)
    assert all(os.path.realpath(p) != grove_bin for p in os.environ["PATH"].split(os.pathsep)), "Grove's venv leaked"
    assert os.path.realpath(os.environ.get("VIRTUAL_ENV", "")) != os.path.dirname(grove_bin)
    assert not (ROOT / "broken.txt").exists(), "a branch broke the app"
'''


@pytest.fixture
def app(tmp_path, monkeypatch, repo):
    """The seed-shaped sample app whose server has its own pytest suite (uv project, real lock)."""
    monkeypatch.setenv("ADW_INSTALL_DIRS", "app/server")
    root = sample_app.build(tmp_path / "sample", deps.find_tool("uv"))
    server = root / "app/server"
    pyproject = server / "pyproject.toml"
    # pytest only in an extra: `uv run` alone would not install it, Grove's install (--all-extras) does.
    pyproject.write_text(pyproject.read_text().replace("dev = []", 'dev = ["pytest"]'))
    (server / "tests").mkdir()
    grove_bin = Path(sys.executable).parent
    (server / "tests/test_prepared.py").write_text(f"GROVE_BIN = {str(grove_bin)!r}\n" + APP_TEST)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run([deps.find_tool("uv"), "lock", "--quiet"], cwd=server, check=True, env=env)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the server's own test suite")
    git(root, "push", "-q", "origin", "main")
    return root


SUITE = "cd app/server && uv run pytest -q"


def test_the_apps_own_suite_validates_merges_in_a_prepared_tree(app):
    agent(app, "good", {"feature.txt": "ok\n"})
    agent(app, "bad", {"broken.txt": "breaks the app\n"})
    out = inv(app, "merge", "--adw-id", "good", "--adw-id", "bad", "--validate", SUITE, "--json",
              env=grove_venv_env(), timeout=600)
    summary = json.loads(out.stdout)
    results = {r["adw_id"]: r for r in summary["results"]}
    assert results["good"]["outcome"] == "merged", results["good"]
    assert results["bad"]["outcome"] == "validation_failed" and results["bad"]["exit_code"] == 1
    assert "a branch broke the app" in results["bad"]["output_tail"]
    assert summary["validations"] == 2 and out.returncode == 1
    assert read_state(app, "bad")["status"] == "failed" and read_state(app, "good")["status"] == "merged"
    wt = app / "trees/.grove-merge"
    # Prepared files stay for the next run; nothing of them reaches a commit or the base.
    assert (wt / ".ports.env").exists() and (wt / "app/server/.venv").is_dir()
    assert git(app, "status", "--porcelain") == "" and "ports.env" not in git(app, "ls-tree", "-r", "main")
    # The tracked repointed configs were put back after the validation: the tree is clean.
    assert git(wt, "status", "--porcelain") == ""
    # The slot was the integration worktree's own, and is free again.
    assert all(c["adw_id"] != ".grove-merge" for c in
               port_leases(app).values())


def test_the_same_suite_fails_in_an_unprepared_tree(app):
    """The control: the suite really needs the preparation (run in a bare detached worktree)."""
    bare = app.parent / "bare-tree"
    git(app, "worktree", "add", "-q", "--detach", str(bare), "main")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = f"{Path(deps.find_tool('uv')).parent}{os.pathsep}{env['PATH']}"
    out = subprocess.run(["bash", "-c", SUITE], cwd=bare, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0


def test_dependencies_are_reused_and_reinstalled_only_when_a_lock_file_changed(repo, monkeypatch):
    from grove.ops import integration

    monkeypatch.setenv("ADW_INSTALL_DIRS", "app/server")
    commit_file(repo, "app/server/pyproject.toml", "[project]\nname='s'\nversion='0.1'\n")
    commit_file(repo, "app/server/uv.lock", "version = 1\n")
    settings = settings_for(repo)
    wt = integration.reset(settings, git(repo, "rev-parse", "main"))
    installs = []
    monkeypatch.setattr(deps, "install", lambda directory, timeout: installs.append(directory) or ["uv"])
    prepared = integration.Prepared(settings, wt)
    try:
        for _ in range(2):
            prepared.before_validation()
        assert len(installs) == 1, "the second validation reuses the install"
        (wt / "app/server/uv.lock").write_text("version = 1\n# changed by a branch\n")
        prepared.before_validation()
        assert len(installs) == 2, "a changed lock file installs again"
        prepared.before_validation()
        assert len(installs) == 2
    finally:
        prepared.release()


# -- 2. batch mode --------------------------------------------------------------------------------


def counting(counter: Path) -> str:
    """A validate command that counts its runs outside the repo and fails when a bad-*.txt is merged."""
    return f"echo run >> {shlex.quote(str(counter))}; ! ls bad-*.txt 2>/dev/null"


def queue_of_eight(repo: Path, bad: set[int]) -> list[str]:
    names = [f"q{i}" for i in range(1, 9)]
    for i, name in enumerate(names, 1):
        agent(repo, name, {f"{'bad' if i in bad else 'ok'}-{name}.txt": f"{name}\n"})
    return names


def merge_queue(repo: Path, names: list[str], counter: Path, *mode: str):
    args = [a for n in names for a in ("--adw-id", n)]
    out = inv(repo, "merge", *args, *mode, "--validate", counting(counter), "--json", timeout=300)
    return out, json.loads(out.stdout)


# Expected runs: all pass, 1 (not 8). One bad (3rd of 8): the batch (1), bisection over 8 prefixes
# (3: 4 fails, 2 passes, 3 fails), the rest rebuilt on prefix 2 (1) = 5, within the 6.
# Two bad (3rd, 6th): 5 as above but the rebuilt batch fails, bisection over its 5 (2), the rest (1) = 8.
@pytest.mark.parametrize("bad,expected", [(set(), 1), ({3}, 5), ({3, 6}, 8)])
def test_batch_counts_validations_and_drops_exactly_the_culprits(repo, tmp_path, bad, expected):
    names = queue_of_eight(repo, bad)
    counter = tmp_path / "count"
    out, summary = merge_queue(repo, names, counter, "--batch")
    assert summary["mode"] == "batch" and summary["validations"] == runs(counter) == expected
    outcomes = {r["adw_id"]: r for r in summary["results"]}
    for i, name in enumerate(names, 1):
        r = outcomes[name]
        if i in bad:
            assert r["outcome"] == "validation_failed" and r["exit_code"] == 1 and "output_tail" in r
            assert read_state(repo, name)["status"] == "failed"
        else:
            assert r["outcome"] == "merged" and read_state(repo, name)["status"] == "merged"
    tree = set(git(repo, "ls-tree", "--name-only", "main").split())
    assert {f"ok-q{i}.txt" for i in range(1, 9) if i not in bad} <= tree and not any(t.startswith("bad-") for t in tree)
    assert out.returncode == (1 if bad else 0)


def test_batch_outcome_equals_sequential_when_failures_are_independent(repo, tmp_path):
    """Same queue, both modes, on two identical repos: the same outcomes, far fewer validations."""
    outcomes = {}
    for mode in ("--sequential", "--batch"):
        repo = make_repo(tmp_path / mode.strip("-"))
        names = queue_of_eight(repo, {2})
        # q5 conflicts only with q2 (the culprit): sequential merges it once q2 is dropped, so must batch.
        commit_file(repo / "trees/q2", "shared.txt", "from q2\n")
        commit_file(repo / "trees/q5", "shared.txt", "from q5\n")
        _, summary = merge_queue(repo, names, tmp_path / f"count{mode}", mode)
        outcomes[mode] = [(r["adw_id"], r["outcome"], r["conflict_files"]) for r in summary["results"]]
        outcomes[mode + "-runs"] = summary["validations"]
    assert outcomes["--batch"] == outcomes["--sequential"]
    assert ("q5", "merged", []) in outcomes["--batch"] and ("q2", "validation_failed", []) in outcomes["--batch"]
    assert outcomes["--batch-runs"] < outcomes["--sequential-runs"] == 8


def test_batch_is_the_configured_mode_and_the_api_takes_it(repo, tmp_path, monkeypatch):
    from grove import merge_worktrees

    names = queue_of_eight(repo, set())[:3]
    monkeypatch.setenv("ADW_MERGE_MODE", "batch")
    summary = merge_worktrees(names, validate=counting(tmp_path / "count"), project_root=repo)
    assert summary.mode == "batch" and summary.validations == 1 and len(summary.merged) == 3 and not summary.errors
    monkeypatch.setenv("ADW_MERGE_MODE", "nonsense")
    assert inv(repo, "merge", "--all").returncode == 2


@pytest.mark.parametrize("point", ["merge:before:bisect", "merge:before:publish", "merge:after:push"])
def test_kill_9_during_a_batch_merge_then_a_rerun_converges_and_loses_nothing(repo, tmp_path, point):
    names = queue_of_eight(repo, {3})
    tips = {n: git(repo, "rev-parse", f"adw/{n}") for n in names}
    before = git(repo, "rev-parse", "main")
    args = [a for n in names for a in ("--adw-id", n)]
    killed = inv(repo, "merge", *args, "--batch", "--push", "--validate", counting(tmp_path / "c1"),
                 env={"GROVE_FAULT": point}, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    main = git(repo, "rev-parse", "main")
    assert main == before or git(repo, "merge-base", "--is-ancestor", before, main) == ""
    again = inv(repo, "merge", *args, "--batch", "--push", "--validate", counting(tmp_path / "c2"), "--json",
                timeout=300)
    summary = json.loads(again.stdout)
    outcomes = {r["adw_id"]: r["outcome"] for r in summary["results"]}
    assert outcomes == {n: ("validation_failed" if n == "q3" else "merged") for n in names}
    assert summary["errors"] == [] and again.returncode == 1
    main = git(repo, "rev-parse", "main")
    assert git(repo.parent / "origin.git", "rev-parse", "main") == main, "remote and local agree"
    assert git(repo, "merge-base", "--is-ancestor", before, main) == ""
    for name, tip in tips.items():  # every agent commit is reachable; the good ones are in main
        assert git(repo, "rev-parse", f"adw/{name}") == tip
        if name != "q3":
            assert git(repo, "merge-base", "--is-ancestor", tip, main) == ""
    assert git(repo, "status", "--porcelain") == "" and inv(repo, "doctor").returncode == 0


# -- 3. sync ---------------------------------------------------------------------------------------


@pytest.fixture
def mcp_repo(repo):
    """A repo whose tracked .mcp.json names ./ paths: setup repoints it and hides it (skip-worktree)."""
    mcp = {"mcpServers": {"playwright": {"command": "npx", "args": ["--config", "./playwright.json"]}}}
    commit_file(repo, ".mcp.json", json.dumps(mcp, indent=2) + "\n")
    git(repo, "push", "-q", "origin", "main")
    return repo


def test_sync_merges_the_base_and_a_repointed_config_survives(mcp_repo):
    repo = mcp_repo
    wt = agent(repo, "s1", {"mine.txt": "agent work\n"}, status="in_progress")
    assert git(wt, "ls-files", "-v", ".mcp.json").startswith("S "), "hidden by setup"
    # main changes the hidden config: by hand, `git merge main` in the worktree refuses.
    mcp = json.loads((repo / ".mcp.json").read_text())
    mcp["mcpServers"]["db"] = {"command": "./bin/db-mcp"}
    commit_file(repo, ".mcp.json", json.dumps(mcp, indent=2) + "\n")
    commit_file(repo, "theirs.txt", "main moved on\n")
    by_hand = subprocess.run(["git", "-C", str(wt), "merge", "--no-edit", "main"], capture_output=True, text=True)
    assert by_hand.returncode != 0 and "would be overwritten" in by_hand.stderr
    result = inv_json(repo, "sync", "--adw-id", "s1")
    assert result["outcome"] == "merged" and result["incoming_commits"] == 2 and result["status"] == "in_progress"
    assert git(repo, "merge-base", "--is-ancestor", "main", "adw/s1") == "" and (wt / "theirs.txt").exists()
    working = json.loads((wt / ".mcp.json").read_text())
    assert working["mcpServers"]["db"]["command"] == str(wt / "bin/db-mcp"), "main's change, repointed"
    assert working["mcpServers"]["playwright"]["args"][-1] == str(wt / "playwright.json")
    assert ".mcp.json" in result["reapplied"] and git(wt, "status", "--porcelain") == ""
    assert str(wt) not in git(wt, "show", "HEAD:.mcp.json"), "no worktree path was committed"
    assert read_state(repo, "s1")["base_commit"] == git(repo, "rev-parse", "main")
    # ... and the synced branch merges cleanly.
    inv(repo, "status", "--adw-id", "s1", "--set", "completed", check=True)
    assert inv_json(repo, "merge", "--adw-id", "s1")["results"][0]["outcome"] == "merged"


def test_sync_killed_midway_is_finished_by_running_it_again(mcp_repo):
    repo = mcp_repo
    wt = agent(repo, "sk", {"mine.txt": "1\n"}, status="in_progress")
    before = (wt / ".mcp.json").read_bytes()
    commit_file(repo, "theirs.txt", "main\n")
    killed = inv(repo, "sync", "--adw-id", "sk", env={"GROVE_FAULT": "sync:before:merge"})
    assert killed.returncode == -signal.SIGKILL
    assert git(wt, "status", "--porcelain") == "", "the hidden config is back as committed: nothing is dirty"
    result = inv_json(repo, "sync", "--adw-id", "sk")
    assert result["outcome"] == "merged" and (wt / "theirs.txt").exists()
    assert (wt / ".mcp.json").read_bytes() == before and git(wt, "ls-files", "-v", ".mcp.json").startswith("S ")


def test_sync_conflict_resolved_by_the_agent_then_merges(repo):
    commit_file(repo, "shared.txt", "base\n")
    wt = agent(repo, "s2", {"shared.txt": "agent's version\n"})
    commit_file(repo, "shared.txt", "main's version\n")
    out = inv(repo, "sync", "--adw-id", "s2", "--json")
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["outcome"] == "conflict" and result["conflict_files"] == ["shared.txt"]
    s = read_state(repo, "s2")
    assert s["status"] == "conflict" and s["conflict_files"] == ["shared.txt"]
    assert (wt / ".git").exists() and "<<<<<<<" in (wt / "shared.txt").read_text()
    assert git(wt, "rev-parse", "--verify", "MERGE_HEAD") == git(repo, "rev-parse", "main"), "git's own state"
    # A second sync, and the merge queue, refuse to act on a half-done merge.
    assert inv(repo, "sync", "--adw-id", "s2").returncode == 1
    inv(repo, "status", "--adw-id", "s2", "--set", "completed", check=True)
    skipped = inv(repo, "merge", "--adw-id", "s2", "--json")
    assert json.loads(skipped.stdout)["results"][0]["outcome"] == "skipped"
    # The agent resolves and commits, as with any git merge.
    (wt / "shared.txt").write_text("both versions\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "--no-edit")
    assert inv_json(repo, "sync", "--adw-id", "s2")["outcome"] == "up_to_date"
    summary = inv_json(repo, "merge", "--adw-id", "s2")
    assert summary["results"][0]["outcome"] == "merged" and (repo / "shared.txt").read_text() == "both versions\n"


def test_sync_rebase_replays_the_agents_commits_on_the_base(repo):
    wt = agent(repo, "s3", {"a.txt": "1\n", "b.txt": "2\n"}, status="in_progress")
    commit_file(repo, "theirs.txt", "main\n")
    result = inv_json(repo, "sync", "--adw-id", "s3", "--strategy", "rebase")
    assert result["outcome"] == "rebased" and result["head_after"] != result["head_before"]
    assert git(repo, "rev-parse", "adw/s3~2") == git(repo, "rev-parse", "main"), "linear on top of main"
    assert (wt / "theirs.txt").exists() and (wt / "a.txt").exists()
    # The rebase rewrote the agent's commits: the originals stay reachable under a backup ref
    # (the model-based test found them unreachable, seed 2054376180).
    assert result["backup"].startswith("refs/grove-backup/adw/s3/")
    assert git(repo, "rev-parse", result["backup"]) == result["head_before"]
    again = inv_json(repo, "sync", "--adw-id", "s3", "--strategy", "rebase")
    assert again["outcome"] == "up_to_date" and again["backup"] is None


def test_sync_refuses_uncommitted_work_and_changes_nothing(mcp_repo):
    repo = mcp_repo
    wt = agent(repo, "s4", {"mine.txt": "1\n"}, status="in_progress")
    commit_file(repo, "theirs.txt", "main\n")
    (wt / "mine.txt").write_text("uncommitted edit\n")
    head = git(wt, "rev-parse", "HEAD")
    out = inv(repo, "sync", "--adw-id", "s4")
    assert out.returncode == 1 and "uncommitted changes: mine.txt" in out.stderr
    assert (wt / "mine.txt").read_text() == "uncommitted edit\n" and git(wt, "rev-parse", "HEAD") == head
    assert git(wt, "ls-files", "-v", ".mcp.json").startswith("S ")
    assert inv(repo, "sync", "--adw-id", "s4", "--strategy", "octopus").returncode == 2
    assert inv(repo, "sync", "--adw-id", "nobody").returncode == 2


@pytest.mark.parametrize("indent", [2, None], ids=["indented", "one-line"])  # one-line: second review
def test_an_agents_deliberate_edit_of_a_repointed_config_is_committable(mcp_repo, indent):
    repo = mcp_repo
    wt = agent(repo, "s5", {}, status="in_progress")
    mcp = json.loads((wt / ".mcp.json").read_text())
    mcp["mcpServers"]["playwright"]["args"].append(str(wt / "extra.json"))  # the agent's own change
    (wt / ".mcp.json").write_text(json.dumps(mcp, indent=indent) + "\n")
    assert git(wt, "status", "--porcelain") == "", "skip-worktree hides it from git status and git add -A"
    commit_file(repo, "theirs.txt", "main\n")
    refused = inv(repo, "sync", "--adw-id", "s5")
    assert refused.returncode == 1 and "env.stage" in refused.stderr, "sync will not lose it"
    staged = inv_json(repo, "env.stage", "--adw-id", "s5")
    assert staged["staged"] == [".mcp.json"]
    git(wt, "commit", "-q", "-m", "s5: one more playwright config")
    committed = json.loads(git(wt, "show", "HEAD:.mcp.json"))
    assert committed["mcpServers"]["playwright"]["args"] == ["--config", "./playwright.json", "./extra.json"]
    assert json.loads((wt / ".mcp.json").read_text()) == mcp, "the working file keeps the worktree's paths"
    assert git(wt, "status", "--porcelain") == ""
    assert inv_json(repo, "sync", "--adw-id", "s5")["outcome"] == "merged"
    inv(repo, "status", "--adw-id", "s5", "--set", "completed", check=True)
    result = inv_json(repo, "merge", "--adw-id", "s5")["results"][0]
    assert result["outcome"] == "merged", result
    assert json.loads(git(repo, "show", "main:.mcp.json")) == committed


def test_sync_worktree_api(repo):
    from grove import sync_worktree

    agent(repo, "s6", {"x.txt": "x\n"}, status="in_progress")
    commit_file(repo, "theirs.txt", "main\n")
    result = sync_worktree("s6", project_root=repo)
    assert result.outcome == "merged" and result.success and result.incoming_commits == 1
    with pytest.raises(ValueError):
        sync_worktree("s6", strategy="octopus", project_root=repo)


# -- 4. the conflict forecast ----------------------------------------------------------------------


def test_conflict_forecast_finds_pairs_skips_disjoint_ones_and_caches(repo):
    commit_file(repo, "shared.txt", "base\n")
    agent(repo, "f1", {"shared.txt": "f1\n"})
    agent(repo, "f2", {"shared.txt": "f2\n"})
    agent(repo, "f3", {"own3.txt": "3\n"})
    agent(repo, "f4", {"dir/inside.txt": "4\n"})
    agent(repo, "f5", {"dir": "a file where f4 has a directory\n"})
    agent(repo, "f6", {"own6.txt": "6\n"}, status="in_progress")  # not completed: not forecast
    refs = git(repo, "for-each-ref")
    first = inv_json(repo, "conflicts")
    pairs = {(p["a"], p["b"]): p["files"] for p in first["pairs"]}
    assert pairs[("f1", "f2")] == ["shared.txt"] and ("f4", "f5") in pairs and len(pairs) == 2
    assert {b["adw_id"] for b in first["branches"]} == {"f1", "f2", "f3", "f4", "f5"}
    assert first["checked"] == 2 and first["skipped_disjoint"] == 8 and first["cached"] == 0
    assert git(repo, "for-each-ref") == refs and git(repo, "status", "--porcelain") == "", "no checkout, no ref"
    again = inv_json(repo, "conflicts")
    assert again["pairs"] == first["pairs"] and again["checked"] == 0 and again["cached"] == 2
    commit_file(repo / "trees/f2", "shared.txt", "f2, again\n")  # only f2's pairs are asked again
    third = inv_json(repo, "conflicts")
    assert third["checked"] == 1 and third["cached"] == 1
    commit_file(repo, "shared.txt", "main moved\n")
    fourth = inv_json(repo, "conflicts", "--epic", "nothing")
    assert fourth["branches"] == [] and fourth["pairs"] == []
    with_base = {b["adw_id"]: b["conflicts_with_base"] for b in inv_json(repo, "conflicts")["branches"]}
    assert with_base["f1"] == ["shared.txt"] and with_base["f3"] == []


def test_forecast_conflicts_api(repo):
    from grove import forecast_conflicts

    agent(repo, "g1", {"same.txt": "1\n"})
    agent(repo, "g2", {"same.txt": "2\n"})
    forecast = forecast_conflicts(project_root=repo)
    assert [(p.a, p.b, p.files) for p in forecast.pairs] == [("g1", "g2", ["same.txt"])]


def test_a_validation_that_hangs_is_killed_with_its_children(repo, tmp_path, monkeypatch):
    agent(repo, "slow", {"slow.txt": "1\n"})
    monkeypatch.setenv("ADW_INSTALL_TIMEOUT", "2")
    pidfile = tmp_path / "child.pid"
    out = inv(repo, "merge", "--adw-id", "slow", "--json", "--validate",
              f"[ -e slow.txt ] || exit 0; sleep 600 & echo $! > {shlex.quote(str(pidfile))}; echo started; wait")
    result = json.loads(out.stdout)["results"][0]
    assert out.returncode == 1 and result["outcome"] == "validation_failed" and "exit_code" not in result
    assert "timed out after 2s" in result["reason"] and "started" in result["output_tail"]
    assert gone(int(pidfile.read_text())), "the backgrounded child went with the group"


def test_a_validation_that_hangs_after_starting_a_daemon_takes_the_daemon_down_too(repo, tmp_path, monkeypatch):
    agent(repo, "dmn", {"dmn.txt": "1\n"})
    monkeypatch.setenv("ADW_INSTALL_TIMEOUT", "2")
    pidfile = shlex.quote(str(tmp_path / "daemon.pid"))
    # The daemon's parent exits at once and it runs in a session of its own: outside the group and tree.
    out = inv(repo, "merge", "--adw-id", "dmn", "--json", "--validate",
              f"[ -e dmn.txt ] || exit 0; (cd / && setsid sleep 607 & echo $! > {pidfile}); sleep 608")
    assert out.returncode == 1 and "timed out after 2s" in json.loads(out.stdout)["results"][0]["reason"]
    daemon = int((tmp_path / "daemon.pid").read_text())
    try:
        assert gone(daemon), "the daemon outlived it"
    finally:
        kill_if_alive(daemon)


def test_a_passing_validation_that_leaves_a_server_running_lands_and_the_server_is_stopped(repo, tmp_path):
    agent(repo, "srv", {"srv.txt": "1\n"})
    pidfile = shlex.quote(str(tmp_path / "server.pid"))
    # The suite starts a server in the background, passes, and forgets to stop it: the server holds
    # the output stream open. The merge must not wait for it (it would until the timeout, 900 s).
    out = inv(repo, "merge", "--adw-id", "srv", "--json", "--validate",
              f"[ -e srv.txt ] || exit 0; sleep 609 & echo $! > {pidfile}; echo suite passed", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["results"][0]["outcome"] == "merged"
    server = int((tmp_path / "server.pid").read_text())
    try:
        assert gone(server), "the server outlived it"
    finally:
        kill_if_alive(server)


@pytest.mark.parametrize("mode", ["--sequential", "--batch"])
def test_a_suite_that_fails_on_the_base_itself_blames_no_branch(repo, tmp_path, mode):
    names = queue_of_eight(repo, set())[:3]
    before = git(repo, "rev-parse", "main")
    counter = tmp_path / "count"
    out = inv(repo, "merge", *[a for n in names for a in ("--adw-id", n)], mode, "--json",
              "--validate", f"echo run >> {shlex.quote(str(counter))}; echo 'database is down'; exit 3")
    assert out.returncode == 1 and "fails on main itself" in json.loads(out.stdout)["error"]
    assert "database is down" in out.stderr and git(repo, "rev-parse", "main") == before
    assert all(read_state(repo, n)["status"] == "completed" for n in names), "no agent is marked failed"
    # sequential: the first branch's tip, then the base; batch: the batch, prefix 1, then the base.
    assert runs(counter) == (2 if mode == "--sequential" else 3)
