"""Third adversarial review of the warm pool (issue 12): each test is a defect found, on real repos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, cli, commit_file, git, inv, inv_json, wait_for

sys.path.insert(0, str(GROVE / "scripts"))
sys.path.insert(0, str(GROVE / "tests"))
from test_pool import light, pool_entries  # noqa: E402


def reachable(repo: Path, commit: str) -> bool:
    """Whether some ref (branch, backup, salvage) still holds ``commit``."""
    refs = git(repo, "for-each-ref", "--format=%(objectname)").split()
    return any(subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, r]).returncode == 0
               for r in refs)


@pytest.mark.parametrize("how", ["moved", "deleted"])
@pytest.mark.parametrize("repair", [("doctor", "--fix"), ("pool", "--size", "1"), ("pool", "--size", "0")])
def test_a_commit_in_a_pooled_worktree_moved_or_deleted_by_hand_is_not_lost(repo, tmp_path, how, repair):
    """Someone committed in a pooled worktree (detached), then moved or deleted its directory. The
    commit lives only in git's admin entry for it (its HEAD): forgetting that entry without a backup
    makes the commit unreachable, as doctor's directory_gone does for an agent (backup refs)."""
    light(repo)
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    [entry] = pool_entries(repo).values()
    wt = Path(entry["path"])
    work = commit_file(wt, "mine.txt", "committed in the pool\n")
    if how == "moved":
        shutil.move(str(wt), str(tmp_path / "elsewhere"))
    else:
        shutil.rmtree(wt)
    inv(repo, *repair, "--no-fetch" if repair[0] == "pool" else "--json")
    assert reachable(repo, work), "the commit made in the pooled worktree is in no ref"
