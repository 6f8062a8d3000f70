"""The lean chain (issue 12): fewer subprocesses, answers Grove now computes itself, caches that
must notice change. Counts, never times: machines are noisy."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, commit_file, git, inv, inv_json, push_from_a_clone, settings_for

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.core import git as grove_git  # noqa: E402
from grove.core.errors import GroveError  # noqa: E402
from grove.resources import deps  # noqa: E402

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


def calls_logged(shim: Path) -> list[str]:
    """The git subcommands the shim logged since it was emptied, without `-C PATH`."""
    return [" ".join(line.split()[2:4]) if line.startswith("-C") else line for line in shim.read_text().splitlines()]


def test_a_new_agent_costs_four_git_calls(tmp_path, repo, shim):
    app = sample_app.build(tmp_path / "sample", None, None)
    inv_json(app, "setup", "--adw-id", "c1", "--no-install")
    first = shim.read_text().splitlines()
    assert sum(line.startswith("--version") for line in first) == 1
    shim.write_text("")
    inv_json(app, "setup", "--adw-id", "c2", "--no-install")
    # add, checkout, hide (ls-files + skip-worktree on the MCP configs); the repository is found
    # without git (config._plain_checkout), validation reads the refs from git's files, and the
    # origin on this machine is read from its files: its main is where origin/main is, no fetch.
    assert [c.split()[0] for c in calls_logged(shim)] == ["worktree", "reset", "ls-files", "update-index"]
    pushed = push_from_a_clone(app.parent / "origin.git", tmp_path / "other")
    shim.write_text("")
    state = inv_json(app, "setup", "--adw-id", "c3", "--no-install")
    assert calls_logged(shim)[0].startswith("fetch") and state["base_commit"] == pushed, "origin moved: fetched"


def test_a_pooled_take_at_the_newest_base_costs_three_git_calls(tmp_path, repo, shim):
    """Issue 24: the take is on every pooled setup's clock. At the commit the entry was filled at,
    with nothing changed or hidden in it, the switch's reset would write nothing, and the fill's
    hiding of the files the take writes still holds: neither asks git again."""
    app = sample_app.build(tmp_path / "sample", None, None)
    inv(app, "pool", "--size", "2", check=True)
    assert inv_json(app, "setup", "--adw-id", "t1")["from_pool"]
    shim.write_text("")
    state = inv_json(app, "setup", "--adw-id", "t2")
    calls = calls_logged(shim)
    assert state["from_pool"] and state["base_commit"] == git(app, "rev-parse", "origin/main")
    # The proof the entry is empty (status), move, branch; origin's main is read from its files.
    assert [c.split()[0] for c in calls] == ["status", "worktree", "branch"], calls
    wt = app / "trees/t2"
    assert git(wt, "symbolic-ref", "HEAD") == "refs/heads/adw/t2"
    # Hidden as a plain setup hides them: the repointed configs (tracked) skip-worktree, nothing to commit.
    assert str(wt) in (wt / ".mcp.json").read_text() and "S .mcp.json" in git(wt, "ls-files", "-v").splitlines()
    assert git(wt, "status", "--porcelain") == "" and git(wt, "add", "-A", "--dry-run") == ""


def test_a_take_s_hiding_follows_the_ignore_rules_of_its_moment(tmp_path, repo):
    """The fill's answer to "which of these files would `git add -A` take" is used at take only
    while the files git reads ignore rules from are unchanged: a .env the user ignores after the
    fill is not warned about at take, one still not ignored is."""
    app = sample_app.build(tmp_path / "sample", None, None)
    (app / ".gitignore").write_text((app / ".gitignore").read_text().replace(".env\n", ""))
    git(app, "commit", "-qam", "env files not ignored")
    git(app, "push", "-q", "origin", "main")
    inv(app, "pool", "--size", "2", check=True)
    warned = inv(app, "setup", "--adw-id", "x1", check=True).stderr
    assert ".env is not git-ignored" in warned, warned
    with (app / ".git/info/exclude").open("a") as exclude:
        exclude.write("/.env\n")
    out = inv(app, "setup", "--adw-id", "x2", check=True)
    assert "from the pool" in out.stderr and "not git-ignored" not in out.stderr, out.stderr
    assert git(app / "trees/x2", "status", "--porcelain") == ""


def test_the_projects_are_listed_again_once_the_main_index_changes(repo, shim):
    """Validation's project detection is cached by the index file's identity, written only once
    validation passed: a project committed since (a new index) is found, one removed is gone."""
    settings = settings_for(repo)

    def detected() -> tuple[str, ...]:
        found = deps.install_dirs(settings, settings.repo)
        deps.remember_projects(settings)  # as a setup does once its validation passed
        return found

    before = detected()
    shim.write_text("")
    assert detected() == before and shim.read_text() == "", "answered from the cache"
    commit_file(repo, "tools/web/package.json", '{"name": "web"}\n')
    assert detected() == (*before, "tools/web")
    git(repo, "rm", "-q", "--cached", "tools/web/package.json")
    assert detected() == before
    (repo / "agents/.grove/manifests").write_text("garbage\0\n\0")
    assert detected() == before


REF_STATES = ["loose", "packed", "both", "missing", "a directory", "symbolic"]


@pytest.mark.parametrize("where", REF_STATES)
def test_refs_are_read_from_git_s_files_as_git_reads_them(repo, where):
    tip = git(repo, "rev-parse", "HEAD")
    older = commit_file(repo, "r.txt", "r\n")
    git(repo, "reset", "-q", "--hard", tip)
    name = "refs/heads/probe"
    if where in ("loose", "both", "packed"):
        git(repo, "update-ref", name, older if where == "both" else tip)
        if where in ("both", "packed"):
            git(repo, "pack-refs", "--all")
        if where == "both":
            git(repo, "update-ref", name, tip)  # loose again, newer than the packed line
    elif where == "a directory":
        git(repo, "update-ref", f"{name}/below", tip)
    elif where == "symbolic":
        git(repo, "symbolic-ref", name, "refs/heads/main")
    names = [name, "refs/heads/main", "refs/remotes/origin/main", "refs/heads/nope"]
    listed = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "--", *names).splitlines()
    by_git = {n: sha for n, _, sha in (line.rpartition(" ") for line in listed) if n in names}
    assert grove_git.refs(repo, names) == by_git
    from_files = grove_git._refs_from_files(repo / ".git", names)
    assert from_files is None if where == "symbolic" else from_files == by_git


def test_head_is_pointed_as_git_symbolic_ref_points_it(repo, tmp_path):
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD")
    git(repo, "branch", "pointed")
    grove_git.point_head(wt, "refs/heads/pointed")
    assert git(wt, "symbolic-ref", "HEAD") == "refs/heads/pointed" and git(wt, "status", "--porcelain") == ""
    admin = grove_git.own_admin_dir(wt)
    assert not (admin / "HEAD.lock").exists()
    (admin / "HEAD.lock").write_text("someone else's\n")  # held: git's own answer, never a write past it
    with pytest.raises(GroveError, match="symbolic-ref failed"):
        grove_git.point_head(wt, "refs/heads/main")
    assert git(wt, "symbolic-ref", "HEAD") == "refs/heads/pointed"


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
    tip = push_from_a_clone(tmp_path / "origin.git", tmp_path / "other")
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


REMOTE_FORMS = ["bare, loose", "bare, packed", "a checkout", "file:// URL", "relative path", "insteadOf",
                "include", "GIT_CONFIG_COUNT", "two urls", "network URL", "no such branch", "old section spelling",
                # From the review of the first version: each made it answer with a stale commit, or
                # answer where git's fetch fails.
                "insteadOf in config.worktree", "insteadOf in a system config read anyway", "a url in the global config",
                "another upload-pack", "GIT_NAMESPACE", "file protocol refused", "refs hidden by the remote",
                "a key it does not know", "percent-encoded file:// URL", "a url without a value",
                "a .git file (separate git dir)"]


@pytest.mark.parametrize("form", REMOTE_FORMS)
def test_a_remote_on_this_machine_is_read_as_git_would_fetch_it(repo, tmp_path, monkeypatch, form):
    """git.local_remote_ref answers with what `git ls-remote` sees, or not at all (then setup fetches)."""
    origin = tmp_path / "origin.git"
    tip = push_from_a_clone(origin, tmp_path / "other")
    url, branch, answers = str(origin), "main", True
    if form == "bare, packed":
        git(origin, "pack-refs", "--all")
    elif form == "a checkout":
        url = str(tmp_path / "other")
    elif form == "file:// URL":
        url = f"file://{origin}"
    elif form == "relative path":
        url = os.path.relpath(origin, repo)
    elif form == "insteadOf":
        git(repo, "config", f"url.{tmp_path / 'other'}.insteadOf", str(origin))
        answers = False
    elif form == "include":
        (tmp_path / "more.config").write_text("")
        git(repo, "config", "include.path", str(tmp_path / "more.config"))
        answers = False
    elif form == "GIT_CONFIG_COUNT":
        monkeypatch.setenv("GIT_CONFIG_COUNT", "0")
        answers = False
    elif form == "two urls":
        git(repo, "config", "--add", "remote.origin.url", str(tmp_path / "other"))
        answers = False
    elif form == "network URL":
        url, answers = "https://example.invalid/x.git", False
    elif form == "no such branch":
        branch, answers = "nope", False
    elif form == "old section spelling":
        with (repo / ".git/config").open("a") as config:
            config.write("[remote.origin]\n\turl = /elsewhere\n")
        answers = False
    elif form == "insteadOf in config.worktree":
        git(repo, "config", "extensions.worktreeConfig", "true")
        git(repo, "config", "--worktree", f"url.{tmp_path / 'other'}.insteadOf", str(origin))
        answers = False
    elif form == "insteadOf in a system config read anyway":
        (tmp_path / "system").write_text(f"[url \"{tmp_path / 'other'}\"]\n\tinsteadOf = {origin}\n")
        monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "false")
        monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(tmp_path / "system"))
        answers = False
    elif form == "a url in the global config":
        (tmp_path / "global").write_text(f"[remote \"origin\"]\n\turl = {tmp_path / 'other'}\n")
        monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "global"))
        answers = False
    elif form == "another upload-pack":
        git(repo, "config", "remote.origin.uploadpack", "git --namespace=ns upload-pack")
        answers = False
    elif form == "GIT_NAMESPACE":
        monkeypatch.setenv("GIT_NAMESPACE", "ns")
        answers = False
    elif form == "file protocol refused":
        git(repo, "config", "protocol.file.allow", "never")
        answers = False
    elif form == "refs hidden by the remote":
        git(origin, "config", "uploadpack.hideRefs", "refs/heads/main")
        answers = False
    elif form == "a key it does not know":
        git(repo, "config", "remote.origin.vcs", "x")
        answers = False
    elif form == "percent-encoded file:// URL":
        url, answers = f"file://{origin}".replace("origin.git", "origin%2Egit"), False
    elif form == "a url without a value":
        with (repo / ".git/config").open("a") as config:
            config.write('[remote "origin"]\n\turl\n')
        answers = False
    elif form == "a .git file (separate git dir)":
        # Its own config (elsewhere) rewrites the URL the global config gives: only git reads both.
        subprocess.run(["git", "init", "-q", f"--separate-git-dir={tmp_path / 'sep.git'}", str(tmp_path / "sep")],
                       check=True)
        (tmp_path / "global").write_text(f"[remote \"origin\"]\n\turl = {origin}\n")
        monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "global"))
        git(tmp_path / "sep", "config", f"url.{tmp_path / 'other'}.insteadOf", str(origin))
        repo, answers = tmp_path / "sep", False
    if form not in ("two urls", "old section spelling", "a url without a value", "a .git file (separate git dir)"):
        git(repo, "remote", "set-url", "origin", url)
    found = grove_git.local_remote_ref(repo, "origin", f"refs/heads/{branch}")
    assert found == (tip if answers else None)
    if answers:
        listed = git(repo, "ls-remote", "origin", f"refs/heads/{branch}").split()
        assert listed[0] == found
