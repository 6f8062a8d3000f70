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


def test_kill_9_inside_the_takes_checkout_then_doctor_and_a_rerun_converge(repo):
    """The take checks the agent's branch out with a plain `git checkout -b` in the moved worktree.
    A kill -9 while it writes the files (the base changed many since the fill) leaves the branch
    made, HEAD detached and index.lock behind; doctor --fix and the same setup must then finish it."""
    light(repo)
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    [entry] = pool_entries(repo).values()
    for i in range(40):
        d = repo / f"bulk/{i}"
        d.mkdir(parents=True)
        for j in range(500):
            (d / f"f{j}.txt").write_text(f"{i} {j}\n" * 20)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "bulk")
    git(repo, "push", "-q", "origin", "main")
    proc = subprocess.Popen([*cli(), "setup", "--adw-id", "c1", "--no-fetch"], cwd=repo, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once the checkout has begun writing the base's files (and long before it is done).
    wait_for((repo / "trees/c1/bulk").exists, "the take's checkout", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    inv(repo, "doctor", "--fix", "--json")
    again = inv(repo, "setup", "--adw-id", "c1", "--no-fetch", "--json")
    assert again.returncode == 0, again.stderr
    wt = repo / "trees/c1"
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "adw/c1"
    assert git(wt, "rev-parse", "HEAD") == git(repo, "rev-parse", "main")
    assert git(wt, "status", "--porcelain") == "" and (wt / "bulk/39/f499.txt").is_file()
    assert inv_json(repo, "doctor")["healthy"]


def test_a_pool_filled_for_another_base_is_filled_for_the_base_asked(repo):
    """`inv pool --size 2 --base dev` over a pool of 2 on main said "size 2", exit 0, created
    nothing: no entry on dev, so `setup --base dev` never took one. The pool has one size; the
    entries on another base count for nothing towards it (and go first, as fill says)."""
    light(repo)
    git(repo, "push", "-q", "origin", "main:dev")
    inv(repo, "pool", "--size", "2", "--no-fetch", check=True)
    filled = inv_json(repo, "pool", "--size", "2", "--base", "dev")
    assert [e["base"] for e in filled["entries"] if e["status"] == "ready"] == ["dev", "dev"], filled
    assert inv_json(repo, "setup", "--adw-id", "d1", "--base", "dev", "--no-install")["from_pool"] is True


def test_a_file_the_fills_db_reset_made_does_not_make_every_entry_kept(repo):
    """A reset script whose output is not git-ignored (data/seed.sqlite) is Grove's own work in a
    pooled worktree, yet the take's "someone worked in it" check saw it as a change: every entry
    went `kept` at its first take, never handed out, and no drain could remove it."""
    commit_file(repo, "scripts/reset_db.sh", "#!/bin/sh\nmkdir -p data && echo seeded > data/seed.sqlite\n")
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "db")
    git(repo, "push", "-q", "origin", "main")
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    s = inv_json(repo, "setup", "--adw-id", "u1", "--no-fetch")
    assert s["from_pool"] is True and inv_json(repo, "pool")["entries"] == []
    assert (repo / "trees/u1/data/seed.sqlite").read_text() == "seeded\n"
    # Changed by someone after the fill, it is work again: kept, never handed out.
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    [entry] = pool_entries(repo).values()
    (Path(entry["path"]) / "data/seed.sqlite").write_text("someone's rows\n")
    assert inv_json(repo, "setup", "--adw-id", "u2", "--no-fetch")["from_pool"] is False
    assert [e["status"] for e in inv_json(repo, "pool")["entries"]] == ["kept"]


def test_a_python_version_the_base_changed_above_the_install_dir_reinstalls_it(tmp_path, repo):
    """uv picks a project's interpreter from .python-version in its directory *or any parent*, and
    a workspace's uv.lock / bun.lock sit at its root: the take looked for lock files only inside
    each install dir, so a base that moved the repo's .python-version kept the pool's venv on the
    old Python while a fresh setup got the new one."""
    sys.path.insert(0, str(GROVE / "scripts"))
    import sample_app
    from grove.resources import deps

    def version(wt: Path) -> str:
        return subprocess.run([str(wt / "app/server/.venv/bin/python"), "-c",
                               "import platform; print(platform.python_version())"],
                              capture_output=True, text=True, check=True).stdout.strip()

    found = subprocess.run([deps.find_tool("uv"), "python", "list", "--only-installed", "--output-format", "json"],
                           capture_output=True, text=True, check=True)
    versions = sorted({p["version"] for p in json.loads(found.stdout) if p["version"].startswith("3.")})
    if len(versions) < 2:
        pytest.skip("needs two Python versions uv can find")
    app = sample_app.build(tmp_path / "plain", deps.find_tool("uv"), deps.find_tool("bun"))
    commit_file(app, ".python-version", versions[0] + "\n")
    git(app, "push", "-q", "origin", "main")
    inv(app, "pool", "--size", "1", check=True)
    commit_file(app, ".python-version", versions[1] + "\n")
    git(app, "push", "-q", "origin", "main")
    pooled = inv_json(app, "setup", "--adw-id", "v1")
    fresh = inv_json(app, "setup", "--adw-id", "v2", "--no-pool")
    assert pooled["from_pool"] and not fresh["from_pool"]
    assert version(app / "trees/v2") == versions[1]
    assert version(app / "trees/v1") == versions[1], "the pooled venv kept the old interpreter"


def test_a_pool_on_a_base_that_does_not_exist_exits_2_and_changes_nothing(repo):
    """Exit 2 means nothing changed: `inv pool --size 1 --base nope` left agents/.grove/ behind
    (the fetch's lock), where `inv setup --base nope` checks the base before touching anything."""
    light(repo)
    before = sorted(p.name for p in repo.iterdir())
    out = inv(repo, "pool", "--size", "1", "--base", "nope")
    assert out.returncode == 2 and "nope" in out.stderr
    assert sorted(p.name for p in repo.iterdir()) == before
