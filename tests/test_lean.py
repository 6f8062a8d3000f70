"""The lean chain (issue 12): fewer subprocesses, answers Grove now computes itself, caches that
must notice change. Counts, never times: machines are noisy."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, git, inv, inv_json

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.core import git as grove_git  # noqa: E402

NAMES = [
    "adw/a1", "feature/TASK-1/x-1", "a", "main", "HEAD", "-x", "x-", "@", "a@b", "a@{b", "@{-1}", "a/.b", ".a",
    "a.lock", "a.lock/b", "a/b.lock", "a..b", "a/", "/a", "a//b", "a.", "a/b.", "a~b", "a^b", "a:b", "a?b", "a*b",
    "a[b", "a\\b", "a b", "a\tb", "a\x7fb", "é/ü", "a/-b", "a/b-", "refs/heads/x", "x.y/z", "x/.lock", ".lock",
    "a.loc", "lock", "a/lock", "a@", "@a", "a{b}", "a}b", "a#b", "a$b", "a'b", 'a"b', "a,b", "a=b", "a+b", "a%b",
    "...", "a/..", "../a", "a/./b", "x/y/z/w", "1", "_", "a_b.c-d/e",
]


def git_accepts(name: str) -> bool:
    # Outside any repository, so git does not expand @{-1} to the branch checked out before.
    return subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True,
                          cwd="/").returncode == 0


@pytest.mark.parametrize("name", NAMES)
def test_branch_names_are_judged_as_git_judges_them(name):
    assert grove_git.branch_name_ok(name) == git_accepts(name)


def test_branch_names_from_a_small_alphabet_agree_with_git():
    """Every name of up to 3 characters over the characters the rules are about."""
    alphabet = "a./-@{l~"
    names = ["".join(p) for n in (1, 2, 3) for p in itertools.product(alphabet, repeat=n)]
    wrong = [n for n in names if grove_git.branch_name_ok(n) != git_accepts(n)]
    assert wrong == []


@pytest.fixture
def shim(tmp_path, monkeypatch):
    """A `git` first on PATH that logs each call, then runs the real one."""
    bin_dir = tmp_path / "shim"
    bin_dir.mkdir()
    log = tmp_path / "git-calls.log"
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    os.chmod(bin_dir / "git", 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return log


def test_a_new_agent_costs_six_git_calls(tmp_path, repo, shim):
    app = sample_app.build(tmp_path / "sample", None, None)
    inv_json(app, "setup", "--adw-id", "c1", "--no-install")
    first = shim.read_text().splitlines()
    assert sum(line.startswith("--version") for line in first) == 1
    shim.write_text("")
    inv_json(app, "setup", "--adw-id", "c2", "--no-install")
    calls = [" ".join(line.split()[2:4]) if line.startswith("-C") else line for line in shim.read_text().splitlines()]
    # validation, fetch, add, checkout, hide (ls-files + skip-worktree on the MCP configs); the
    # repository itself is found without git (config._plain_checkout).
    assert [c.split()[0] for c in calls] == ["for-each-ref", "fetch", "worktree", "reset", "ls-files",
                                            "update-index"], calls


def test_the_ignore_check_is_cached_until_gitignore_changes(repo, shim):
    # The first setup adds Grove's lines to info/exclude, which is part of the key: one more check.
    inv_json(repo, "setup", "--adw-id", "i0", "--no-install")
    inv_json(repo, "setup", "--adw-id", "i1", "--no-install")
    shim.write_text("")
    second = inv(repo, "setup", "--adw-id", "i2", "--no-install", check=True)
    assert "check-ignore" not in shim.read_text() and "not git-ignored" not in second.stderr
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text().replace("/trees/\n", ""))
    third = inv(repo, "setup", "--adw-id", "i3", "--no-install", check=True)
    assert "trees/ is not git-ignored" in third.stderr


def test_has_remote_reads_config_and_falls_back_to_git(repo, tmp_path):
    assert grove_git.has_remote(repo, "origin")
    assert not grove_git.has_remote(repo, "upstream")
    git(repo, "remote", "add", 'we"ird', str(tmp_path))
    assert grove_git.has_remote(repo, 'we"ird')


def test_the_fetched_commit_is_the_remote_tip(repo, tmp_path):
    """The commit setup starts from comes from FETCH_HEAD or the stamp, not from git: it must be the tip."""
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(other)], check=True)
    (other / "new.txt").write_text("new\n")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "upstream work")
    git(other, "push", "-q", "origin", "main")
    tip = git(other, "rev-parse", "HEAD")
    state = inv_json(repo, "setup", "--adw-id", "f1", "--no-install")
    assert state["base_commit"] == tip == git(Path(state["worktree_path"]), "rev-parse", "HEAD")
    fetched = inv_json(repo, "git.fetch")
    assert fetched["commit"] == tip


def test_the_repository_is_found_as_git_finds_it(repo, tmp_path):
    """The plain-checkout shortcut gives git's answer, and steps aside where git must answer."""
    from grove.core import config

    inv_json(repo, "setup", "--adw-id", "r1", "--no-install")
    (repo / "sub/dir").mkdir(parents=True)
    for start in (repo, repo / "sub/dir", repo / "trees/r1"):
        assert config.find_repo(start) == repo
    assert config._plain_checkout(repo / "trees/r1") is None  # a linked worktree: its .git is a file
    bare = tmp_path / "origin.git"
    with pytest.raises(Exception):
        config.find_repo(bare)
