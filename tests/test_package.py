"""Grove as a real Python package (issue 11): installed into fresh environments, run from any repo,
imported beside a user's own `lib` package."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, make_repo

import grove


def run(argv, **kw):
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def check_installed_grove(bin_dir: Path, python: Path, tmp: Path) -> None:
    """`grove --version`, `grove setup --json` in a target repo, and the API beside a user's `lib`."""
    grove_cmd = bin_dir / "grove"
    assert run([grove_cmd, "--version"]).stdout.strip() == f"Grove {grove.__version__}"
    app = make_repo(tmp / "target")
    out = run([grove_cmd, "setup", "--adw-id", "pkg1", "--no-install", "--json"], cwd=app)
    state = json.loads(out.stdout)
    assert state["worktree_path"] == str(app / "trees" / "pkg1") and (app / "trees/pkg1/.ports.env").is_file()
    assert run([python, "-m", "grove", "list", "--json"], cwd=app).stdout.count('"adw_id": "pkg1"') == 1
    # An orchestrator with its own top-level `lib` package: both import, neither shadows the other.
    orch = tmp / "orchestrator"
    (orch / "lib").mkdir(parents=True)
    (orch / "lib" / "__init__.py").write_text("WHO = 'the orchestrator'\n")
    code = ("import lib, grove; from grove import create_worktree_for_agent, list_worktrees, MergeSummary; "
            "assert lib.WHO == 'the orchestrator'; "
            f"print([m.name for m in list_worktrees(project_root={str(app)!r})])")
    assert "pkg1" in run([python, "-c", code], cwd=orch).stdout
    run([grove_cmd, "teardown", "--adw-id", "pkg1", "--force", "--json"], cwd=app)


def _sealed_env(tmp: Path) -> dict:
    # No Grove checkout on sys.path and no venv leaking in: only what the install put there.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(GROVE)))
    return env


def test_pip_install_into_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", GROVE],
        env=_sealed_env(tmp_path))
    site = run([venv / "bin/python", "-c", "import grove; print(grove.__file__)"], cwd=tmp_path).stdout
    assert str(GROVE) not in site, "the installed copy, not the checkout, is imported"
    check_installed_grove(venv / "bin", venv / "bin/python", tmp_path)


def test_uv_tool_install(tmp_path):
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not in Grove's .venv")
    env = dict(_sealed_env(tmp_path), UV_TOOL_DIR=str(tmp_path / "tools"), UV_TOOL_BIN_DIR=str(tmp_path / "bin"))
    run([uv, "tool", "install", "--quiet", GROVE], env=env)
    python = next((tmp_path / "tools").glob("grove-worktrees/bin/python"))
    check_installed_grove(tmp_path / "bin", python, tmp_path)


def test_inv_and_grove_list_the_same_tasks(tmp_path):
    bin_dir = Path(sys.executable).parent
    inv_list = run([bin_dir / "inv", "-r", GROVE, "--list"]).stdout
    grove_list = run([bin_dir / "grove", "--list"]).stdout
    # Task names sit at a two-space indent; the wrapped descriptions differ (issue 21: each names its own command).
    tasks = lambda text: sorted(line.split()[0] for line in text.splitlines() if re.match(r"^  \S", line))
    assert tasks(inv_list) == tasks(grove_list) and "setup" in tasks(grove_list)
    assert "--adw-id" in run([bin_dir / "grove", "--help", "setup"]).stdout
    assert "grove" in run([bin_dir / "grove", "--print-completion-script", "bash"]).stdout


def test_models_round_trip_through_their_json():
    from datetime import datetime, timezone

    from grove.models import MergeSummary, WorktreeExecutionResult, WorktreeMetadata

    summary = {"base": "main", "strategy": "no-ff", "dry_run": False, "base_before": "a", "base_after": "b",
               "pushed": False, "attempts": 1, "mode": "sequential", "validations": 0, "errors": [], "validation_logs": [],
               "results": [{"adw_id": "a1", "branch": "adw/a1", "outcome": "merged", "commits": ["c"],
                            "conflict_files": [], "seconds": 0.1, "reason": None, "merged_commit": "b"}]}
    assert MergeSummary.from_dict(summary).to_dict() == summary
    result = WorktreeExecutionResult("a1", ["make", "test"], 0, datetime(2026, 1, 1, tzinfo=timezone.utc),
                                     datetime(2026, 1, 1, 0, 0, 3, tzinfo=timezone.utc), 3.0, "agents/a1/logs/x.log")
    assert WorktreeExecutionResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    meta = WorktreeMetadata.from_dict({"adw_id": "a1", "worktree_path": "/r/trees/a1", "branch": "adw/a1",
                                       "base_branch": "main", "status": "created",
                                       "created_at": "2026-01-01T00:00:00Z", "ports": {"BACKEND_PORT": 9100}})
    assert meta.to_dict()["adw_id"] == "a1" and meta.to_dict()["created_at"] == "2026-01-01T00:00:00Z"
    assert WorktreeMetadata.from_dict(meta.to_dict()) == meta


def test_too_old_git_is_refused_with_a_clear_message(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\necho 'git version 2.30.1'\n")
    (fake / "git").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([Path(sys.executable).parent / "grove", "list"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "needs git 2.38 or newer" in out.stderr, out.stderr


def test_an_inv_installed_without_grove_s_dependencies(tmp_path):
    """pipx's `inv` lacks python-dotenv: the checkout's .venv lends it, else a clear message (issue 11)."""
    venv = tmp_path / "bare"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "invoke==3.0.3"])
    app = make_repo(tmp_path / "target")
    listed = run([venv / "bin/inv", "-r", GROVE, "list", "--json"], cwd=app)
    assert json.loads(listed.stdout) == []
    lone = tmp_path / "lone-checkout"  # a checkout whose .venv was never built
    lone.mkdir()
    shutil.copy(GROVE / "tasks.py", lone / "tasks.py")
    shutil.copytree(GROVE / "lib" / "grove", lone / "lib" / "grove")
    out = subprocess.run([venv / "bin/inv", "-r", lone, "list"], cwd=app, capture_output=True, text=True)
    assert out.returncode == 1 and "lacks" in out.stderr and "dotenv" in out.stderr and "Traceback" not in out.stderr
