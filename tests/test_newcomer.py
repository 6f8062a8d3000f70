"""Grove the way a new user meets it (issue 21): one distribution name, one command name, flags that
mean something, `grove init` that leaves the repository clean, and zero configuration on common
layouts, run from a wheel built from this checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, GROVE_BIN, INV, git, make_repo, snapshot

BIN = Path(sys.executable).parent


def run(argv, cwd=None, env=None, check=True):
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


# -- 1. the distribution name -------------------------------------------------------------------

def test_the_distribution_is_grove_worktrees_everywhere():
    assert 'name = "grove-worktrees"' in (GROVE / "pyproject.toml").read_text()
    offenders = [f"{p.relative_to(GROVE)}: {line.strip()}" for p in [*(GROVE / "lib").rglob("*.py"), GROVE / "README.md",
                                                                    *(GROVE / "docs").rglob("*.md")]
                 for line in p.read_text().splitlines()
                 if "grove[" in line or "pip install grove" in line.replace("grove-worktrees", "")]
    assert offenders == []


@pytest.mark.parametrize("marker, expected", [
    ("uv-receipt.toml", "uv tool install 'grove-worktrees[watch]'"),
    ("pipx_metadata.json", "pipx inject grove-worktrees rich"),
    (None, "-m pip install 'grove-worktrees[watch]'"),
])
def test_install_hints_fit_how_grove_was_installed(tmp_path, monkeypatch, marker, expected):
    from grove.core import hints

    if marker:
        (tmp_path / marker).write_text("")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(hints, "__file__", str(tmp_path / "site-packages/grove/core/hints.py"))
    assert expected in hints.install_extra("watch", "rich")


# -- 2. one command name ------------------------------------------------------------------------

def test_grove_speaks_of_grove_and_inv_of_inv(tmp_path):
    app = make_repo(tmp_path)
    by_grove = run([GROVE_BIN, "exec", "--", "true"], cwd=app, check=False)
    by_inv = run([INV, "-r", GROVE, "exec", "--", "true"], cwd=app, check=False)
    assert by_grove.returncode == by_inv.returncode == 2
    assert "grove exec --all" in by_grove.stderr and "inv exec" not in by_grove.stderr
    assert "inv exec --all" in by_inv.stderr and "grove exec" not in by_inv.stderr
    listed = " ".join(run([GROVE_BIN, "--list"]).stdout.split())  # --list wraps its columns
    assert "grove exec --all" in listed and "`inv" not in listed and "inv exec" not in listed
    assert "inv exec --all" in " ".join(run([INV, "-r", GROVE, "--list"]).stdout.split())


def test_teardown_without_an_id_names_all(tmp_path):
    out = run([GROVE_BIN, "teardown"], cwd=make_repo(tmp_path), check=False)
    assert out.returncode == 2 and "--adw-id" in out.stderr and "grove teardown --all" in out.stderr


def test_inv_setup_in_the_user_s_own_repository(tmp_path, monkeypatch):
    """`grove init --tasks` writes a two-line tasks.py; the real `inv` of this venv then runs Grove."""
    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "24100")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "24200")
    app = make_repo(tmp_path)
    said = run([GROVE_BIN, "init", "--tasks"], cwd=app).stdout
    assert "tasks.py: written" in said and len((app / "tasks.py").read_text().splitlines()) == 2
    out = run([INV, "setup", "--adw-id", "t1", "--no-install"], cwd=app)
    assert (app / "trees/t1/.ports.env").is_file() and "ready t1" in out.stderr + out.stdout
    assert "inv teardown" in run([INV, "teardown"], cwd=app, check=False).stderr
    again = run([GROVE_BIN, "init", "--tasks"], cwd=app).stdout
    assert "already loads Grove" in again


# -- 3. no flags that lie; smaller frictions --------------------------------------------------

def test_help_offers_only_grove_s_flags_and_dry_changes_nothing(tmp_path):
    helped = run([GROVE_BIN, "--help"]).stdout
    for flag in ("--dry", "--hide", "--pty", "--warn-only", "--echo", "--prompt-for-sudo-password", "-T"):
        assert f" {flag}" not in helped and f"{flag}," not in helped, flag
    app = make_repo(tmp_path)
    before = snapshot(app)
    out = run([GROVE_BIN, "--dry", "setup", "--adw-id", "x"], cwd=app, check=False)
    assert out.returncode == 2 and "--dry" in out.stderr and snapshot(app) == before
    assert run([GROVE_BIN, "help"]).stdout == helped
    assert "--adw-id" in run([GROVE_BIN, "help", "setup"]).stdout


@pytest.mark.parametrize("argv", [["--help"], ["--list"], ["setup", "--help"]])
def test_a_closed_pipe_is_not_a_traceback(argv):
    proc = subprocess.Popen([str(GROVE_BIN), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err
