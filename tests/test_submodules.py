"""Submodules in agent worktrees (issue 14), with real submodules whose upstreams are local bare repos.

git 2.38.1+ refuses file-URL submodules unless told otherwise (CVE-2022-39253); the fixtures say
`-c protocol.file.allow=always` for their own `submodule add`. Grove itself allows file transport
only for the one clone it makes from the main checkout's copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import commit_file, git, inv, inv_json, snapshot

ALLOW = ["-c", "protocol.file.allow=always"]


def bare_with_file(root: Path, name: str, filename: str) -> Path:
    """A bare upstream repo ``root/<name>.git`` with one commit holding ``filename``."""
    work = root / f"{name}-src"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    commit_file(work, filename, f"{name}\n")
    bare = root / f"{name}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


@pytest.fixture
def sub_repo(repo: Path) -> Path:
    """The test repo with submodule vendor/lib, which has a submodule of its own, deep/ (nested),
    checked out in the main checkout as a user's would be after `git clone --recurse-submodules`."""
    root = repo.parent
    deep = bare_with_file(root, "deep", "deep.txt")
    lib_src = root / "lib-src"
    lib = bare_with_file(root, "lib", "lib.txt")
    git(lib_src, *ALLOW, "submodule", "add", "-q", str(deep), "deep")
    git(lib_src, "commit", "-qm", "add deep")
    git(lib_src, "push", "-q", str(lib), "main")
    git(repo, *ALLOW, "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-qm", "add vendor/lib")
    git(repo, *ALLOW, "submodule", "update", "-q", "--init", "--recursive")
    git(repo, "push", "-q", "origin", "main")
    return repo


def offline(root: Path) -> None:
    """The submodules' upstreams disappear: only the main checkout's copies are left."""
    for name in ("lib", "deep"):
        shutil.move(root / f"{name}.git", root / f"{name}.git.away")


def test_setup_checks_out_nested_submodules_offline_from_the_main_checkout(sub_repo):
    config_before = (sub_repo / ".git/config").read_text()
    offline(sub_repo.parent)
    state = inv_json(sub_repo, "setup", "--adw-id", "s1", "--no-install")
    assert state["steps"]["submodules"]["outcome"] == "done"
    tree = sub_repo / "trees/s1"
    assert (tree / "vendor/lib/lib.txt").read_text() == "lib\n"
    assert (tree / "vendor/lib/deep/deep.txt").read_text() == "deep\n"
    recorded = git(tree, "ls-tree", "HEAD", "vendor/lib").split()[2]
    assert git(tree / "vendor/lib", "rev-parse", "HEAD") == recorded
    assert git(tree, "status", "--porcelain") == ""
    # Nothing written to the config the worktrees share with the main checkout.
    assert (sub_repo / ".git/config").read_text() == config_before
    # The agent's submodule fetches and pushes where the main checkout's does, not into its copy.
    assert git(tree / "vendor/lib", "remote", "get-url", "origin") == str(sub_repo.parent / "lib.git")
    # Objects came from the main checkout's copy by hard links, not from a second download.
    ours = Path(git(tree / "vendor/lib", "rev-parse", "--absolute-git-dir")) / "objects"
    theirs = sub_repo / ".git/modules/vendor/lib/objects"
    inodes = {p.stat().st_ino for p in theirs.rglob("*") if p.is_file() and p.parent.name != "info"}
    assert inodes and any(p.stat().st_ino in inodes for p in ours.rglob("*") if p.is_file())


def test_rerun_leaves_the_agents_submodule_work_alone(sub_repo):
    inv(sub_repo, "setup", "--adw-id", "s2", "--no-install", check=True)
    lib = sub_repo / "trees/s2/vendor/lib"
    mine = commit_file(lib, "agent.txt", "agent work\n")
    again = inv_json(sub_repo, "setup", "--adw-id", "s2", "--no-install")
    assert again["steps"]["submodules"]["outcome"] == "unchanged"
    assert git(lib, "rev-parse", "HEAD") == mine


def test_a_submodule_missing_from_the_main_checkout_fails_setup_and_rolls_back(repo, tmp_path):
    lib = bare_with_file(repo.parent, "lib", "lib.txt")
    other = tmp_path / "other"  # a second clone that adds the submodule upstream
    subprocess.run(["git", "clone", "-q", str(repo.parent / "origin.git"), str(other)], check=True)
    git(other, *ALLOW, "submodule", "add", "-q", str(lib), "vendor/lib")
    git(other, "commit", "-qm", "add vendor/lib")
    git(other, "push", "-q", "origin", "main")
    before = snapshot(repo)  # the main checkout is behind: it has never seen the submodule
    out = inv(repo, "setup", "--adw-id", "s3", "--no-install")
    assert out.returncode == 1
    assert "submodule vendor/lib is not checked out in the main checkout" in out.stderr
    assert "git submodule update --init --recursive" in out.stderr
    after = snapshot(repo)
    assert after["worktrees"] == before["worktrees"] and after["registry"] == {}
    assert not (repo / "trees/s3").exists()


def test_a_commit_the_main_copy_lacks_is_fetched_from_its_origin(sub_repo, tmp_path):
    lib_src = sub_repo.parent / "lib-src"
    newer = commit_file(lib_src, "v2.txt", "v2\n")
    git(lib_src, "push", "-q", str(sub_repo.parent / "lib.git"), "main")
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(sub_repo.parent / "origin.git"), str(other)], check=True)
    git(other, *ALLOW, "submodule", "update", "-q", "--init", "vendor/lib")
    git(other / "vendor/lib", "fetch", "-q", "origin")
    git(other / "vendor/lib", "checkout", "-q", newer)
    git(other, "commit", "-qam", "bump vendor/lib")
    git(other, "push", "-q", "origin", "main")
    inv(sub_repo, "setup", "--adw-id", "s4", "--no-install", check=True)
    tree = sub_repo / "trees/s4"
    assert git(tree / "vendor/lib", "rev-parse", "HEAD") == newer
    assert (tree / "vendor/lib/v2.txt").is_file() and (tree / "vendor/lib/deep/deep.txt").is_file()


def test_update_none_is_skipped_as_git_skips_it(sub_repo):
    git(sub_repo, "config", "-f", ".gitmodules", "submodule.vendor/lib.update", "none")
    git(sub_repo, "commit", "-qam", "vendor/lib: update = none")
    git(sub_repo, "push", "-q", "origin", "main")
    state = inv_json(sub_repo, "setup", "--adw-id", "s5", "--no-install")
    assert state["steps"]["submodules"]["outcome"] == "unchanged"
    assert not any((sub_repo / "trees/s5/vendor/lib").iterdir())


def test_teardown_keeps_every_submodule_commit_and_salvages_its_edits(sub_repo):
    inv(sub_repo, "setup", "--adw-id", "s6", "--no-install", check=True)
    tree = sub_repo / "trees/s6"
    lib, deep = tree / "vendor/lib", tree / "vendor/lib/deep"
    deep_commit = commit_file(deep, "nested.txt", "nested work\n")  # in no other repository
    git(lib, "add", "deep")
    lib_commit = commit_file(lib, "agent.txt", "agent work\n")
    git(tree, "add", "vendor/lib")
    git(tree, "commit", "-qm", "bump vendor/lib")
    (lib / "lib.txt").write_text("edited, not committed\n")
    inv(sub_repo, "status", "--adw-id", "s6", "--set", "completed", check=True)
    refused = inv(sub_repo, "teardown", "--adw-id", "s6")
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr and tree.is_dir()
    done = inv_json(sub_repo, "teardown", "--adw-id", "s6", "--force")
    assert not tree.exists() and done["moved_nested"] == []  # a submodule is saved, not moved aside
    refs = done["submodule_refs"]
    assert refs and all(r.startswith("refs/grove-backup/submodules/s6/vendor/lib") for r in refs)
    for commit in (lib_commit, deep_commit):  # each one reachable from a saved ref in the main repository
        assert any(subprocess.run(["git", "-C", str(sub_repo), "merge-base", "--is-ancestor", commit, r]).returncode == 0
                   for r in refs), commit
    work = next(r for r in refs if "/uncommitted/" in r)
    assert git(sub_repo, "show", f"{work}:lib.txt") == "edited, not committed"
    # Listed where Grove lists what it saved.
    listed = {row["ref"] for row in inv_json(sub_repo, "doctor")["backups"]}
    assert set(refs) <= listed


def test_a_clean_agent_with_submodules_tears_down_without_force(sub_repo):
    inv(sub_repo, "setup", "--adw-id", "s7", "--no-install", check=True)
    inv(sub_repo, "status", "--adw-id", "s7", "--set", "completed", check=True)
    done = inv_json(sub_repo, "teardown", "--adw-id", "s7", "--delete-branch")
    assert done["submodule_refs"] == [] and not (sub_repo / "trees/s7").exists()
    assert not (sub_repo / ".git/worktrees/s7").exists()
    assert inv(sub_repo, "doctor").returncode == 0
    assert os.listdir(sub_repo / ".git/modules/vendor/lib")  # the main checkout's copy is untouched


def test_teardown_keeps_a_submodule_s_stash_tags_and_reflog_only_commits(sub_repo):
    """Found by the second adversarial review: only HEAD and branches were kept."""
    inv(sub_repo, "setup", "--adw-id", "s7", "--no-install", check=True)
    lib = sub_repo / "trees/s7/vendor/lib"
    recorded = git(lib, "rev-parse", "HEAD")
    (lib / "lib.txt").write_text("stashed edit\n")
    git(lib, "stash", "-q")
    stashed = git(lib, "rev-parse", "refs/stash")
    git(lib, "checkout", "-q", "--detach")
    tagged = commit_file(lib, "t.txt", "tagged\n")
    git(lib, "tag", "mytag")
    git(lib, "checkout", "-q", "--detach")
    in_reflog = commit_file(lib, "r.txt", "reflog only\n")
    git(lib, "checkout", "-q", "--detach", recorded)  # back where the superproject records it: clean
    inv(sub_repo, "status", "--adw-id", "s7", "--set", "completed", check=True)
    done = inv_json(sub_repo, "teardown", "--adw-id", "s7")
    refs = done["submodule_refs"]
    for commit in (stashed, tagged, in_reflog):
        assert any(subprocess.run(["git", "-C", str(sub_repo), "merge-base", "--is-ancestor", commit, r]).returncode == 0
                   for r in refs), commit
