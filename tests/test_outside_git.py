"""Nothing is lost outside git either (issue 20): ignored files, pool entries, merge --cleanup,
salvage of hidden configs and of the index, and a worktree whose `.git` file is gone.

One regression test per defect, each failing on the code before its fix; real git in a temporary
repository with a bare origin, driven through `inv`/`grove`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from conftest import make_idle, commit_file, git, inv, inv_json


def setup_agent(repo, adw_id, *extra):
    return inv_json(repo, "setup", "--adw-id", adw_id, "--no-install", *extra)


def finish(repo, adw_id, status="completed"):
    inv(repo, "status", "--adw-id", adw_id, "--set", status, check=True)


def with_env_file(repo: Path) -> None:
    """The main checkout's own (ignored) .env, which setup merges into each worktree."""
    gitignore = repo / ".gitignore"
    gitignore.write_text(gitignore.read_text() + ".env\n")
    git(repo, "commit", "-qam", "ignore .env")
    git(repo, "push", "-q", "origin", "main")
    (repo / ".env").write_text("SECRET=main\n")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def salvage_refs(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/grove-salvage/").split()


# -- item 1: ignored files an agent wrote are archived, never deleted silently -------------------


@pytest.mark.parametrize("force", [False, True])
def test_teardown_archives_ignored_files_the_agent_wrote(repo, force):
    with_env_file(repo)
    setup_agent(repo, "a1")
    wt = repo / "trees/a1"
    db = wt / "app/server/db/notes.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"SQLite rows the agent wrote\0\1\2")
    os.utime(db, (1_700_000_000, 1_700_000_000))
    (wt / ".env").write_text((wt / ".env").read_text() + "AGENT_KEY=edited\n")
    edited_env = (wt / ".env").read_bytes()
    (wt / "node_modules/pkg").mkdir(parents=True)
    (wt / "node_modules/pkg/index.js").write_text("regenerable\n")
    finish(repo, "a1")
    result = inv_json(repo, "teardown", "--adw-id", "a1", *(["--force"] if force else []))
    assert not wt.exists()
    kept = result["archive"]
    assert kept["files"] == 2 and kept["bytes"] == db_size(kept) and kept["path"]
    event = Path(kept["path"])
    assert event.parent == repo / "agents/.archive/a1" and event.name[:8].isdigit() and event.name[8] == "T"
    files = event / "files"
    assert (files / "app/server/db/notes.db").read_bytes() == b"SQLite rows the agent wrote\0\1\2"
    assert (files / "app/server/db/notes.db").stat().st_mtime == 1_700_000_000, "mtime kept"
    assert (files / ".env").read_bytes() == edited_env, "the agent's edit of .env is kept"
    assert not (files / ".ports.env").exists(), "Grove's own unchanged .ports.env is not archived"
    assert not (files / "node_modules").exists(), "regenerable output is not archived"
    for path in [event, *event.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is private"
    manifest = json.loads((event / "manifest.json").read_text())
    rows = {r["path"]: r for r in manifest["files"]}
    assert set(rows) == {".env", "app/server/db/notes.db"}
    assert rows[".env"]["sha256"] == sha(files / ".env") and rows[".env"]["size"] == len(edited_env)
    assert manifest["worktree"] == str(wt) and manifest["branch"] == "adw/a1"
    assert manifest["reason"] and manifest["created_at"].endswith("Z")
    blobs = git(repo, "rev-list", "--all", "--objects")
    assert "notes.db" not in blobs, "ignored files never go into git objects"


def db_size(kept: dict) -> int:
    return sum(os.lstat(Path(kept["path"]) / "files" / p).st_size for p in kept["paths"])


def test_a_teardown_with_only_grove_files_archives_nothing(repo):
    with_env_file(repo)
    setup_agent(repo, "a2")
    finish(repo, "a2")
    result = inv_json(repo, "teardown", "--adw-id", "a2")
    assert result["archive"]["files"] == 0 and result["archive"]["path"] is None
    assert not (repo / "agents/.archive/a2").exists()


def test_a_database_the_reset_made_and_the_agent_wrote_is_kept(repo):
    """A file the reset wrote is recorded (size, mtime) in the state's grove_files; changed, it is the agent's."""
    script = repo / "scripts/reset_db.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nprintf 'seed\\n' > app.db\nprintf 'seed\\n' > untouched.db\n")
    script.chmod(0o755)
    git(repo, "add", "scripts/reset_db.sh")
    git(repo, "commit", "-q", "-m", "db script")
    git(repo, "push", "-q", "origin", "main")
    setup_agent(repo, "a3")
    with open(repo / "trees/a3/app.db", "a") as f:
        f.write("row by the agent\n")
    finish(repo, "a3")
    out = inv(repo, "teardown", "--adw-id", "a3", "--json", check=True)
    kept = json.loads(out.stdout)["archive"]
    assert kept["paths"] == ["app.db"], "the reset's own output, untouched since, is Grove's and not archived"
    assert f"kept 1 ignored file(s), {kept['bytes']} bytes, in {kept['path']}" in out.stderr, "said on stderr too"
    assert (Path(kept["path"]) / "files/app.db").read_text() == "seed\nrow by the agent\n"


def with_docs_server(repo):
    """A committed .mcp.json whose filesystem server is rooted at ./docs/, a directory the repo lacks."""
    commit_file(repo, ".mcp.json", json.dumps({"mcpServers": {"fs": {"command": "fs-mcp", "args": ["./docs/"]}}},
                                              indent=2) + "\n")
    git(repo, "push", "-q", "origin", "main")


def test_a_repointed_directory_is_visible_to_git_and_salvaged(repo):
    with_docs_server(repo)
    setup_agent(repo, "r1")
    wt = repo / "trees/r1"
    assert (wt / "docs").is_dir() and not (wt / "docs/.gitignore").exists(), "no directory is ignored wholesale"
    (wt / "docs/notes.md").write_text("the agent's notes\n")
    assert "docs/notes.md" in git(wt, "status", "--porcelain", "--untracked-files=all")
    finish(repo, "r1")
    refused = inv(repo, "teardown", "--adw-id", "r1")
    assert refused.returncode == 1 and "docs/notes.md" in refused.stderr and wt.is_dir()
    result = inv_json(repo, "teardown", "--adw-id", "r1", "--force")
    assert git(repo, "show", f"{result['salvage_ref']}:docs/notes.md") == "the agent's notes"


def test_a_rerun_of_setup_unhides_a_directory_an_older_grove_ignored_wholesale(repo):
    with_docs_server(repo)
    setup_agent(repo, "r2")
    wt = repo / "trees/r2"
    (wt / "docs/.gitignore").write_text("# made by Grove for this worktree\n*\n")  # what Grove wrote before
    (wt / "docs/notes.md").write_text("the agent's notes\n")
    assert "docs" not in git(wt, "status", "--porcelain")
    setup_agent(repo, "r2")
    assert not (wt / "docs/.gitignore").exists()
    assert "docs/notes.md" in git(wt, "status", "--porcelain", "--untracked-files=all")


def test_past_the_size_limit_a_plain_teardown_refuses_and_force_archives(repo):
    setup_agent(repo, "l1")
    wt = repo / "trees/l1"
    (wt / "big.db").write_bytes(b"x" * 20000)
    (wt / "small.db").write_bytes(b"y" * 10)
    finish(repo, "l1")
    env = {"ADW_ARCHIVE_LIMIT_MB": "0.01"}
    refused = inv(repo, "teardown", "--adw-id", "l1", env=env)
    assert refused.returncode == 1 and "big.db" in refused.stderr and "ADW_ARCHIVE_LIMIT_MB" in refused.stderr
    assert (wt / "big.db").is_file() and git(repo, "worktree", "list").count("trees/l1") == 1, "nothing removed"
    kept = inv_json(repo, "teardown", "--adw-id", "l1", "--force", env=env)["archive"]
    assert sorted(kept["paths"]) == ["big.db", "small.db"] and kept["bytes"] == 20010


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "lots"])
def test_a_bad_archive_limit_is_bad_input(repo, value):
    out = inv(repo, "list", env={"ADW_ARCHIVE_LIMIT_MB": value})
    assert out.returncode == 2 and "ADW_ARCHIVE_LIMIT_MB" in out.stderr


def test_a_bad_regenerable_dir_is_bad_input(repo):
    out = inv(repo, "list", env={"ADW_REGENERABLE_DIRS": "node_modules,../x"})
    assert out.returncode == 2 and "ADW_REGENERABLE_DIRS" in out.stderr


def test_regenerable_dirs_are_configurable(repo):
    setup_agent(repo, "g1")
    wt = repo / "trees/g1"
    (wt / "node_modules").mkdir()
    (wt / "node_modules/kept.db").write_text("not regenerable here\n")
    finish(repo, "g1")
    kept = inv_json(repo, "teardown", "--adw-id", "g1", env={"ADW_REGENERABLE_DIRS": ".venv"})["archive"]
    assert kept["paths"] == ["node_modules/kept.db"]


def test_salvage_lists_and_restores_an_archive_without_overwriting(repo):
    setup_agent(repo, "s1")
    (repo / "trees/s1/local.db").write_text("agent rows\n")
    (repo / "trees/s1/other.db").write_text("other rows\n")
    finish(repo, "s1")
    kept = inv_json(repo, "teardown", "--adw-id", "s1")["archive"]
    rows = [r for r in inv_json(repo, "salvage", "--adw-id", "s1") if r["kind"] == "archive"]
    assert [r["id"] for r in rows] == [kept["id"]] and sorted(rows[0]["files"]) == ["local.db", "other.db"]
    setup_agent(repo, "s1")
    (repo / "trees/s1/local.db").write_text("something else\n")
    clash = inv(repo, "salvage", "--adw-id", "s1", "--restore", kept["id"])
    assert clash.returncode == 1 and "local.db" in clash.stderr
    assert not (repo / "trees/s1/other.db").exists(), "nothing restored when a file would be overwritten"
    (repo / "trees/s1/local.db").unlink()
    done = inv_json(repo, "salvage", "--adw-id", "s1", "--restore", kept["path"])
    assert sorted(done["files"]) == ["local.db", "other.db"]
    assert (repo / "trees/s1/local.db").read_text() == "agent rows\n"
    assert Path(kept["path"], "files/local.db").is_file(), "the archive stays until gc --archives"


def test_gc_deletes_only_grove_archives_older_than_asked(repo):
    setup_agent(repo, "o1")
    (repo / "trees/o1/x.db").write_text("x\n")
    finish(repo, "o1")
    kept = inv_json(repo, "teardown", "--adw-id", "o1")["archive"]
    stranger = repo / "agents/.archive/o1/not-grove"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("a user's\n")
    for bad in ("-1", "nan", "inf", "soon"):
        out = inv(repo, "gc", "--archives", "--older-than-days", bad)
        assert out.returncode == 2, bad
    assert inv(repo, "gc", "--archives").returncode == 2, "N is required"
    assert inv_json(repo, "gc", "--archives", "--older-than-days", "1")["archives_deleted"] == []
    assert Path(kept["path"]).is_dir()
    gone = inv_json(repo, "gc", "--archives", "--older-than-days", "0")["archives_deleted"]
    assert [a["path"] for a in gone] == [kept["path"]] and not Path(kept["path"]).exists()
    assert (stranger / "keep.txt").is_file(), "a directory without Grove's manifest is never deleted"


def test_gc_of_archives_keeps_a_database_dump_that_shares_the_archive_s_folder(repo):
    """A teardown archives files, then dumps the database into the same second's folder
    (agents/.archive/<id>/<utc>/db/): `gc --archives` deletes the archive of files, never the dump."""
    setup_agent(repo, "o2")
    (repo / "trees/o2/x.db").write_text("x\n")
    finish(repo, "o2")
    kept = inv_json(repo, "teardown", "--adw-id", "o2")["archive"]
    dump = Path(kept["path"]) / "db" / "app.dump"  # as safety/dbdump.py writes it in that second
    dump.parent.mkdir()
    dump.write_text("the agent's rows\n")
    gone = inv_json(repo, "gc", "--archives", "--older-than-days", "0")["archives_deleted"]
    assert [a["path"] for a in gone] == [kept["path"]]
    assert dump.read_text() == "the agent's rows\n" and not (Path(kept["path"]) / "files").exists()
    assert inv_json(repo, "gc", "--archives", "--older-than-days", "0")["archives_deleted"] == []


@pytest.mark.parametrize("how", ["gc", "teardown --all", "merge --cleanup", "cleanup-epic", "api force"])
def test_every_removal_path_archives_ignored_files(repo, how):
    setup_agent(repo, "p1", "--epic", "EP")
    wt = repo / "trees/p1"
    (wt / "notes.db").write_text("the agent's rows\n")
    if how == "gc":
        make_idle(repo, "p1")
        assert [a["adw_id"] for a in inv_json(repo, "gc", "--max-age-days", "7")["removed"]] == ["p1"]
    elif how == "merge --cleanup":
        commit_file(wt, "feature.txt", "done\n")
        finish(repo, "p1")
        [r] = inv_json(repo, "merge", "--adw-id", "p1", "--cleanup")["results"]
        assert r["outcome"] == "merged" and r["cleanup"]["archive"]["paths"] == ["notes.db"]
    elif how == "api force":
        from grove import worktree_manager as wm

        wm.cleanup_worktree("p1", force=True, project_root=repo)
    else:
        finish(repo, "p1", "failed")
        inv(repo, *how.split(), *(["--epic", "EP"] if how == "cleanup-epic" else []), check=True)
    assert not wt.exists()
    [event] = (repo / "agents/.archive/p1").iterdir()
    assert (event / "files/notes.db").read_text() == "the agent's rows\n"
    assert json.loads((event / "manifest.json").read_text())["files"][0]["path"] == "notes.db"


def test_restoring_an_archive_needs_a_worktree(repo):
    setup_agent(repo, "w1")
    (repo / "trees/w1/x.db").write_text("x\n")
    finish(repo, "w1")
    kept = inv_json(repo, "teardown", "--adw-id", "w1")["archive"]
    setup_agent(repo, "w2")
    (repo / "trees/w2/.git").unlink()
    __import__("shutil").rmtree(repo / "trees/w2")
    out = inv(repo, "salvage", "--adw-id", "w2", "--restore", kept["id"])
    assert out.returncode == 1 and not (repo / "trees/w2").exists()


# -- item 5: a pool drain goes through the one removal path ---------------------------------------


def test_a_pool_drain_keeps_a_commit_only_the_entry_reflog_reaches(repo):
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    [entry] = inv_json(repo, "pool")["entries"]
    wt = Path(entry["path"])
    pool_commit = git(wt, "rev-parse", "HEAD")
    lost = commit_file(wt, "work.txt", "made in a pool entry\n")
    git(wt, "checkout", "-q", "--detach", pool_commit)
    (wt / "notes.db").write_text("written in a pool entry\n")
    inv(repo, "pool", "--size", "0", check=True)
    assert not wt.exists()
    assert git(repo, "for-each-ref", f"--contains={lost}", "--format=%(refname)"), "the commit is kept"
    [event] = (repo / "agents/.archive" / wt.name).iterdir()
    assert sorted(p.name for p in (event / "files").iterdir()) == ["notes.db"], "only what was not Grove's"


# -- item 7: uncommitted work is never "merged" ---------------------------------------------------


def test_merge_cleanup_never_reports_uncommitted_work_as_merged(repo):
    setup_agent(repo, "m1")
    wt = repo / "trees/m1"
    (wt / "README.md").write_text("edited, never committed\n")
    (wt / "new.txt").write_text("untracked\n")
    finish(repo, "m1")
    out = inv(repo, "merge", "--all", "--cleanup", "--json")
    summary = json.loads(out.stdout)
    [r] = summary["results"]
    assert out.returncode == 1 and r["outcome"] == "skipped" and "uncommitted" in r["reason"]
    assert r["uncommitted"] == ["README.md", "new.txt"]
    assert wt.is_dir() and (wt / "new.txt").is_file(), "not cleaned up"
    assert inv_json(repo, "status", "--adw-id", "m1")["status"] == "completed"


# -- item 10: restoring a salvage that holds an edited hidden config ------------------------------


def test_salvage_restore_works_for_an_edited_repointed_config(repo):
    mcp = {"mcpServers": {"pw": {"command": "npx", "args": ["--config", "./playwright.json"]}}}
    commit_file(repo, ".mcp.json", json.dumps(mcp, indent=2) + "\n")
    git(repo, "push", "-q", "origin", "main")
    setup_agent(repo, "h1")
    wt = repo / "trees/h1"
    edited = json.loads((wt / ".mcp.json").read_text())
    edited["mcpServers"]["db"] = {"command": str(wt / "bin/db-mcp")}
    (wt / ".mcp.json").write_text(json.dumps(edited, indent=2) + "\n")
    (wt / "README.md").write_text("agent edit\n")
    finish(repo, "h1")
    ref = inv_json(repo, "teardown", "--adw-id", "h1", "--force")["salvage_ref"]
    setup_agent(repo, "h2")
    wt2 = repo / "trees/h2"
    done = inv_json(repo, "salvage", "--adw-id", "h2", "--restore", ref)
    assert sorted(done["files"]) == [".mcp.json", "README.md"]
    assert (wt2 / "README.md").read_text() == "agent edit\n"
    restored = json.loads((wt2 / ".mcp.json").read_text())
    assert restored["mcpServers"]["db"] == {"command": str(wt2 / "bin/db-mcp")}, "moved to this worktree"
    assert restored["mcpServers"]["pw"]["args"] == ["--config", str(wt2 / "playwright.json")]


def test_a_real_restore_conflict_names_its_files(repo):
    setup_agent(repo, "c1")
    (repo / "trees/c1/README.md").write_text("agent edit\n")
    finish(repo, "c1")
    ref = inv_json(repo, "teardown", "--adw-id", "c1", "--force")["salvage_ref"]
    setup_agent(repo, "c2")
    commit_file(repo / "trees/c2", "README.md", "someone else's edit\n")
    out = inv(repo, "salvage", "--adw-id", "c2", "--restore", ref)
    assert out.returncode == 1 and "README.md" in out.stderr and "conflict" in out.stderr
    assert "<<<<<<<" in (repo / "trees/c2/README.md").read_text()


# -- item 13: a worktree whose .git file is gone --------------------------------------------------


def test_a_failed_teardown_makes_teardown_all_and_cleanup_epic_exit_1(repo):
    for adw_id in ("t1", "t2"):
        setup_agent(repo, adw_id, "--epic", "EP")
        finish(repo, adw_id)
    (repo / "trees/t1/work.txt").write_text("the agent's\n")
    (repo / "trees/t1/.git").unlink()
    (repo / "user-file.txt").write_text("the user's own, untracked in the main checkout\n")
    doctor = inv(repo, "doctor", "--json")
    assert doctor.returncode == 1
    assert [p["adw_id"] for p in json.loads(doctor.stdout)["problems"] if p["kind"] == "broken_worktree"] == ["t1"]
    epic = inv(repo, "cleanup-epic", "--epic", "EP", "--json")
    assert epic.returncode == 1 and [e["adw_id"] for e in json.loads(epic.stdout)["errors"]] == ["t1"]
    setup_agent(repo, "t3")
    finish(repo, "t3")
    out = inv(repo, "teardown", "--all", "--json")
    assert out.returncode == 1 and [e["adw_id"] for e in json.loads(out.stdout)["errors"]] == ["t1"]
    assert (repo / "trees/t1/work.txt").is_file() and salvage_refs(repo) == [], "no salvage ran in the main checkout"


def test_force_teardown_without_a_git_file_archives_the_files_and_never_salvages_main(repo):
    setup_agent(repo, "t4")
    wt = repo / "trees/t4"
    (wt / "work.txt").write_text("the agent's\n")
    (wt / "README.md").write_text("edited\n")
    (wt / "deep/er").mkdir(parents=True)
    (wt / "deep/er/notes.md").write_text("nested\n")
    (wt / ".git").unlink()
    (repo / "user-file.txt").write_text("the user's own\n")
    result = inv_json(repo, "teardown", "--adw-id", "t4", "--force")
    assert result["salvage_ref"] is None and salvage_refs(repo) == [], "salvage never runs in the main checkout"
    files = Path(result["archive"]["path"]) / "files"
    assert (files / "work.txt").read_text() == "the agent's\n" and (files / "README.md").read_text() == "edited\n"
    assert (files / "deep/er/notes.md").read_text() == "nested\n"
    assert not wt.exists() and "trees/t4" not in git(repo, "worktree", "list")
    assert (repo / "user-file.txt").read_text() == "the user's own\n"
    assert git(repo, "status", "--porcelain") == "?? user-file.txt"


# -- item 14a: the staged version of a file is kept too ------------------------------------------


def test_salvage_keeps_the_staged_version_and_the_working_copy(repo):
    setup_agent(repo, "i1")
    wt = repo / "trees/i1"
    (wt / "README.md").write_text("staged version\n")
    git(wt, "add", "README.md")
    (wt / "README.md").write_text("working copy\n")
    finish(repo, "i1")
    ref = inv_json(repo, "teardown", "--adw-id", "i1", "--force")["salvage_ref"]
    assert git(repo, "show", f"{ref}:README.md") == "working copy"
    assert git(repo, "show", f"{ref}^2:README.md") == "staged version"
    assert git(repo, "rev-parse", f"{ref}^1") == git(repo, "rev-parse", f"{ref}^2^1"), "both on the agent's HEAD"


def test_an_edit_to_a_tracked_env_file_grove_hid_is_archived_at_teardown(repo):
    """A repository that tracks its `.env` (defaults, no secrets): Grove lays the agent's ports over
    it and hides it (skip-worktree). An edit the agent makes there is neither salvaged (Grove's env
    files never go into a git object) nor an ignored file: teardown --force deleted it. It is moved
    to the agent's archive like an ignored file."""
    (repo / ".env").write_text("APP_MODE=dev\n")
    git(repo, "add", "-f", ".env")
    git(repo, "commit", "-qm", "a tracked env file")
    git(repo, "push", "-q", "origin", "main")
    inv_json(repo, "setup", "--adw-id", "n1")
    wt = repo / "trees/n1"
    edited = (wt / ".env").read_text() + "MY_SECRET=the agent's\n"
    (wt / ".env").write_text(edited)
    done = inv_json(repo, "teardown", "--adw-id", "n1", "--force")
    assert ".env" in done["archive"]["paths"]
    assert (Path(done["archive"]["path"]) / "files/.env").read_text() == edited
