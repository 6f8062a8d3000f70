"""The warm pool and parallel installs (issue 12), on real repos with real uv, bun and sqlite."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import GROVE, cli, commit_file, git, inv, inv_json, wait_for
from pg_fixture import pg_server, template_db  # noqa: F401 (fixtures)
from test_postgres import pg_repo  # noqa: F401 (a fixture)

sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402

from grove.resources import deps  # noqa: E402


def make_wheel(directory: Path) -> str:
    """A tiny wheel with a console script, made by hand so uv installs it with no index."""
    name, version = "greet", "0.1"
    files = {
        f"{name}/__init__.py": "def main():\n    import sys\n    print('greet', sys.prefix)\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                             "Tag: py3-none-any\n",
        f"{name}-{version}.dist-info/entry_points.txt": "[console_scripts]\ngreet = greet:main\n",
    }
    wheel = f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(directory / wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text)}")
        record.append(f"{name}-{version}.dist-info/RECORD,,")
        z.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def app(tmp_path, repo, monkeypatch):
    """The sample app with a console script on each side: a wheel for uv, a file: package for bun."""
    app = sample_app.build(tmp_path / "sample", None, None)
    server, client = app / "app/server", app / "app/client"
    wheel = make_wheel(server)
    (server / "pyproject.toml").write_text(
        (server / "pyproject.toml").read_text().replace("dependencies = []", 'dependencies = ["greet"]')
        + f'\n[tool.uv.sources]\ngreet = {{ path = "{wheel}" }}\n')
    (client / "tool").mkdir()
    (client / "tool/package.json").write_text(json.dumps({"name": "tool", "version": "1.0.0",
                                                          "bin": {"tool": "cli.sh"}}))
    (client / "tool/cli.sh").write_text("#!/bin/sh\necho tool ok\n")
    os.chmod(client / "tool/cli.sh", 0o755)
    (client / "package.json").write_text(json.dumps({"name": "client", "private": True,
                                                     "dependencies": {"tool": "file:./tool"}}))
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run([deps.find_tool("uv"), "lock", "--quiet", "--offline"], cwd=server, check=True, env=env)
    subprocess.run([deps.find_tool("bun"), "install", "--silent"], cwd=client, check=True, env=env)
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "console scripts")
    git(app, "push", "-q", "origin", "main")
    monkeypatch.setenv("UV_OFFLINE", "1")
    return app


def light(repo: Path) -> Path:
    """A repo without installs whose db reset is a script: quick to pool, for the crash tests."""
    commit_file(repo, "scripts/reset_db.sh", "#!/bin/sh\nmkdir -p data && date > data/app.db\n")
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "db script")
    git(repo, "push", "-q", "origin", "main")
    return repo


def pool_entries(repo: Path) -> dict:
    path = repo / "agents/.grove/pool.json"
    return json.loads(path.read_text())["entries"] if path.exists() else {}


def run_ok(argv, cwd) -> str:
    out = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, env=dict(
        os.environ, PATH=os.environ["PATH"]))
    assert out.returncode == 0, (argv, out.stdout, out.stderr)
    return out.stdout


def text_files_mentioning(root: Path, needle: str) -> list[str]:
    hits = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git" and d != "__pycache__"]
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                if needle in os.readlink(path):
                    hits.append(str(path))
                continue
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def test_pooled_worktree_works_like_a_fresh_one(app):
    filled = inv_json(app, "pool", "--size", "1")
    assert len(filled["created"]) == 1 and filled["entries"][0]["status"] == "ready"
    pooled_path = filled["entries"][0]["path"]
    s = inv_json(app, "setup", "--adw-id", "p1")
    fresh = inv_json(app, "setup", "--adw-id", "f1", "--no-pool")
    assert s["from_pool"] is True and fresh["from_pool"] is False
    assert s["steps"]["worktree"]["outcome"] == "pooled" and fresh["steps"]["worktree"]["outcome"] == "done"
    wt = app / "trees/p1"
    assert not Path(pooled_path).exists() and pool_entries(app) == {}
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "adw/p1"
    assert git(wt, "rev-parse", "HEAD") == git(app, "rev-parse", "origin/main")
    # The venv's console script, its interpreter and node_modules/.bin all run from the new place.
    assert run_ok([wt / "app/server/.venv/bin/greet"], wt).strip() == f"greet {wt}/app/server/.venv"
    assert run_ok([wt / "app/server/.venv/bin/python", "-c", "import greet; print(greet.__file__)"], wt) \
        .startswith(str(wt / "app/server/.venv"))
    assert run_ok([wt / "app/client/node_modules/.bin/tool"], wt).strip() == "tool ok"
    # The database is there; the env files hold the agent's own ports; nothing names the pool.
    assert sqlite3.connect(wt / "app/server/app.db").execute("select count(*) from agent").fetchone() == (1,)
    backend = s["backend_port"]
    assert f"BACKEND_PORT={backend}\n" in (wt / ".ports.env").read_text()
    assert f"BACKEND_PORT={backend}\n" in (wt / ".env").read_text()
    assert f"BACKEND_PORT={backend}\n" in (wt / "app/server/.env").read_text()
    assert "API_KEY=s3cret-value" in (wt / ".env").read_text()
    assert json.loads((wt / "playwright-mcp-config.json").read_text())["outputDir"] == str(wt / "videos")
    assert text_files_mentioning(wt, "/.pool/") == []
    assert text_files_mentioning(wt, str(app / "trees/f1")) == []
    assert git(wt, "status", "--porcelain") == ""
    # Same tracked and generated files as the fresh worktree (the deps and the db aside).
    def listing(root):
        skip = {".git", "node_modules", ".venv", "__pycache__"}
        out = set()
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip]
            out.update(str((Path(dirpath) / f).relative_to(root)) for f in files)
        return out
    assert listing(wt) == listing(app / "trees/f1")
    # Re-running changes nothing and the agent stays from the pool.
    again = inv_json(app, "setup", "--adw-id", "p1")
    assert again["from_pool"] is True and again["slot"] == s["slot"]


def test_two_setups_racing_for_one_pooled_worktree(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    procs = [subprocess.Popen([*cli(), "setup", "--adw-id", i, "--json"], cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in ("r1", "r2")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    states = [json.loads(o[0]) for o in outs]
    assert sorted(s["from_pool"] for s in states) == [False, True]
    assert pool_entries(repo) == {}
    for s in states:
        wt = Path(s["worktree_path"])
        assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == s["branch"]
        assert (wt / "data/app.db").is_file()
    assert inv_json(repo, "doctor")["healthy"]


def test_two_setups_forced_into_the_claims_window_never_take_the_same_entry(repo, tmp_path):
    """Issue 25: the race above passes even with the claim unlocked, because the two setups rarely
    meet in the millisecond the claim takes. Here the first one holds the claim open (GROVE_HOLD, a
    test-only hook in core/faults.py) until the second has asked for it: without the pool lock the
    second is inside at the same time, every run."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, GROVE_HOLD=f"pool:claim@{barrier}")

    def start(adw_id):
        return subprocess.Popen([*cli(), "setup", "--adw-id", adw_id, "--json"], cwd=repo, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first, second = start("h1"), None
    try:
        wait_for(lambda: any(barrier.glob("in-*")), "the first setup inside the claim", first)
        second = start("h2")
        outs = [p.communicate(timeout=120) for p in (first, second)]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert len(list(barrier.glob("want-*"))) == 2, "both setups reached the claim"
    # What each claimed, written by the hold inside the critical section. (Whether a double claim
    # then shows in the outcome depends on timing: the loser may find the entry already moved and
    # fall back to a fresh worktree. The claim itself must never be doubled.)
    claimed = sorted(p.read_text() for p in barrier.glob("in-*"))
    assert len(claimed) == 2 and claimed[0] == "" and claimed[1].startswith("p-"), f"one claim: {claimed}"
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    states = [json.loads(o[0]) for o in outs]
    assert sorted(s["from_pool"] for s in states) == [False, True], "one entry, taken once"
    assert pool_entries(repo) == {}
    for s in states:
        assert git(Path(s["worktree_path"]), "rev-parse", "--abbrev-ref", "HEAD") == s["branch"]
    assert inv_json(repo, "doctor")["healthy"]


def test_pool_filled_before_the_base_moved(repo, monkeypatch):
    light(repo)
    inv_json(repo, "pool", "--size", "2")
    old = git(repo, "rev-parse", "HEAD")
    new = commit_file(repo, "docs/new.md", "new\n")
    git(repo, "rm", "-q", "README.md")
    git(repo, "commit", "-q", "-m", "drop readme")
    new = git(repo, "rev-parse", "HEAD")
    git(repo, "push", "-q", "origin", "main")
    s = inv_json(repo, "setup", "--adw-id", "m1")
    wt = Path(s["worktree_path"])
    assert s["from_pool"] and s["base_commit"] == new != old
    assert git(wt, "rev-parse", "HEAD") == new and (wt / "docs/new.md").is_file() and not (wt / "README.md").exists()
    assert git(wt, "status", "--porcelain") == ""
    assert s["steps"]["db"]["outcome"] == "done"  # ADW_DB_INPUTS empty: any change counts
    # With the inputs named, a change elsewhere keeps the pooled database.
    monkeypatch.setenv("ADW_DB_INPUTS", "scripts/reset_db.sh,db")
    commit_file(repo, "docs/other.md", "other\n")
    git(repo, "push", "-q", "origin", "main")
    s2 = inv_json(repo, "setup", "--adw-id", "m2")
    assert s2["from_pool"] and s2["steps"]["db"]["outcome"] == "kept"
    assert (Path(s2["worktree_path"]) / "docs/other.md").is_file()
    inv_json(repo, "pool", "--size", "1")
    commit_file(repo, "db/schema.sql", "create table t (x);\n")
    git(repo, "push", "-q", "origin", "main")
    s3 = inv_json(repo, "setup", "--adw-id", "m3")
    assert s3["from_pool"] and s3["steps"]["db"]["outcome"] == "done"


def test_a_lock_file_that_changed_reinstalls_only_its_dir(tmp_path, repo):
    app = sample_app.build(tmp_path / "plain", deps.find_tool("uv"), deps.find_tool("bun"))
    inv_json(app, "pool", "--size", "2")
    commit_file(app, "README.md", "unrelated change\n")
    git(app, "push", "-q", "origin", "main")
    same = inv(app, "setup", "--adw-id", "l0", "--json", check=True)
    assert json.loads(same.stdout)["steps"]["install"]["outcome"] == "kept"
    assert "reinstall: none" in same.stderr
    pkg = json.loads((app / "app/client/package.json").read_text())
    pkg["version"] = "0.2.0"
    (app / "app/client/package.json").write_text(json.dumps(pkg))
    git(app, "commit", "-q", "-am", "client version")
    git(app, "push", "-q", "origin", "main")
    out = inv(app, "setup", "--adw-id", "l1", "--json", check=True)
    s = json.loads(out.stdout)
    assert s["from_pool"] and s["steps"]["install"]["outcome"] == "done"
    line = next(x for x in out.stderr.splitlines() if "from the pool" in x)
    assert "reinstall: app/client (lock file changed); db" in line, line
    installed = next(x for x in out.stderr.splitlines() if "install " in x and "done" in x)
    assert "app/client: bun" in installed and "app/server" not in installed, installed


def test_crash_while_filling_is_cleaned_by_doctor(repo):
    light(repo)
    crashed = inv(repo, "pool", "--size", "1", env={"GROVE_FAULT": "pool:after:add"})
    assert crashed.returncode == -9
    assert [e["status"] for e in pool_entries(repo).values()] == ["filling"]
    report = json.loads(inv(repo, "doctor", "--json", "--fix").stdout)
    assert [(p["kind"], p["fixed"]) for p in report["problems"]] == [("pool_dead_process", True)]
    assert pool_entries(repo) == {} and "/.pool/" not in git(repo, "worktree", "list", "--porcelain")
    assert inv_json(repo, "pool", "--size", "1")["created"]


@pytest.mark.parametrize("fault", ["pool:after:claim", "pool:after:move", "pool:after:branch"])
@pytest.mark.parametrize("fix_first", [False, True])
def test_crash_while_taking_then_doctor_and_rerun_converge(repo, fault, fix_first):
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    crashed = inv(repo, "setup", "--adw-id", "k1", env={"GROVE_FAULT": fault})
    assert crashed.returncode == -9, crashed.stderr
    report = json.loads(inv(repo, "doctor", "--json", *(["--fix"] if fix_first else [])).stdout)
    kinds = {p["kind"] for p in report["problems"]}
    assert kinds, "the crash is visible to doctor"
    s = inv_json(repo, "setup", "--adw-id", "k1")
    wt = repo / "trees/k1"
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "adw/k1" and (wt / "data/app.db").is_file()
    assert git(wt, "status", "--porcelain") == ""
    assert s["status"] == "created" and s["steps"]["db"]["outcome"] in ("done", "kept")
    final = inv_json(repo, "doctor")
    assert final["healthy"], final
    assert all(e["status"] == "ready" for e in pool_entries(repo).values())
    listed = git(repo, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 1 + 1 + len(pool_entries(repo))
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/").split() == ["refs/heads/adw/k1",
                                                                                      "refs/heads/main"]


def test_teardown_and_salvage_of_a_pooled_agent_like_any_other(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    s = inv_json(repo, "setup", "--adw-id", "t1")
    wt = Path(s["worktree_path"])
    assert s["from_pool"]
    tip = commit_file(wt, "work.txt", "agent work\n")
    (wt / "draft.txt").write_text("uncommitted\n")
    assert inv(repo, "teardown", "--adw-id", "t1").returncode == 2  # unfinished
    inv(repo, "status", "--adw-id", "t1", "--set", "completed", check=True)
    dirty = inv(repo, "teardown", "--adw-id", "t1")
    assert dirty.returncode == 1 and "draft.txt" in dirty.stderr and (wt / "draft.txt").is_file()
    unmerged = inv(repo, "teardown", "--adw-id", "t1", "--delete-branch", "--force")
    assert unmerged.returncode == 0, unmerged.stderr
    done = json.loads(inv(repo, "list", "--archived", "--json").stdout)[0]
    assert done["adw_id"] == "t1" and done["from_pool"] is True
    # The branch the take created is Grove's (journal), so --force deletes it with its tip saved;
    # the uncommitted file is salvaged before the worktree goes.
    assert tip in git(repo, "for-each-ref", "--format=%(objectname)", "refs/grove-backup/").split()
    salvaged = inv_json(repo, "salvage", "--adw-id", "t1")
    assert [r["files"] for r in salvaged] == [["draft.txt"]]
    assert not wt.exists() and "adw/t1" not in git(repo, "branch", "--list")
    assert inv_json(repo, "doctor")["healthy"]


def test_drain_keeps_a_dirty_entry_until_it_is_clean(repo):
    light(repo)
    filled = inv_json(repo, "pool", "--size", "2")
    dirty = Path(filled["entries"][0]["path"])
    (dirty / "notes.txt").write_text("someone's notes\n")
    drained = inv(repo, "pool", "--size", "0", "--json")
    assert drained.returncode == 1
    result = json.loads(drained.stdout)
    assert [k["name"] for k in result["kept"]] == [dirty.name] and len(result["removed"]) == 1
    assert (dirty / "notes.txt").read_text() == "someone's notes\n"
    doctor = json.loads(inv(repo, "doctor", "--json").stdout)
    assert [p["kind"] for p in doctor["problems"]] == ["pool_entry_kept"]
    assert inv_json(repo, "setup", "--adw-id", "d1")["from_pool"] is False, "a kept entry is never handed out"
    (dirty / "notes.txt").unlink()
    assert inv_json(repo, "pool", "--size", "0")["removed"] == [dirty.name]
    assert not dirty.exists() and pool_entries(repo) == {}


def test_doctor_sees_the_pools_leftovers(repo):
    light(repo)
    filled = inv_json(repo, "pool", "--size", "1")
    stray = repo / "trees/.pool/not-ours"
    stray.mkdir()
    (stray / "file.txt").write_text("x\n")
    gone = Path(filled["entries"][0]["path"])
    subprocess.run(["rm", "-rf", str(gone)], check=True)
    report = json.loads(inv(repo, "doctor", "--json", "--fix").stdout)
    kinds = {p["kind"]: p for p in report["problems"]}
    assert kinds["pool_entry_gone"]["fixed"] and not kinds["pool_unknown_directory"]["fixed"]
    assert (stray / "file.txt").is_file() and pool_entries(repo) == {}
    assert gone.name not in git(repo, "worktree", "list", "--porcelain")


def test_setup_refill_refills_in_the_background(repo):
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    s = inv_json(repo, "setup", "--adw-id", "b1", "--refill")
    assert s["from_pool"]
    deadline, fillers = time.time() + 60, set()
    while time.time() < deadline:
        entries = pool_entries(repo)
        fillers |= {e["pid"] for e in entries.values() if e.get("pid")}
        if entries and all(e["status"] == "ready" for e in entries.values()):
            break
        time.sleep(0.05)
    assert [e["status"] for e in pool_entries(repo).values()] == ["ready"]
    log = repo / "agents/.grove/pool-refill.log"
    while time.time() < deadline and "pool: 1 ready" not in log.read_text():  # its last line
        time.sleep(0.05)
    assert "pool: 1 ready, size 1" in log.read_text()
    # The refill is a process of its own: it ends by itself, and the test waits for it (bounded).
    for pid in fillers - {os.getpid()}:
        while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()


def test_bad_pool_size_exits_2_and_changes_nothing(repo):
    out = inv(repo, "pool", "--size", "lots")
    assert out.returncode == 2 and "whole number" in out.stderr
    assert inv(repo, "pool", "--size", "-1").returncode == 2
    assert not (repo / "agents").exists() and not (repo / "trees").exists()


def test_install_dirs_install_at_the_same_time_and_db_runs_after(repo, tmp_path, monkeypatch):
    """Each bun project's preinstall waits (bounded) to see the other one start: only concurrent
    installs both see it. The db script then finds both installs finished."""
    marks = tmp_path / "marks"
    marks.mkdir()
    wait = ('me=$1; other=$2; touch "$MARKS/started-$me"; i=0; '
            'while [ ! -e "$MARKS/started-$other" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
            '[ -e "$MARKS/started-$other" ] && touch "$MARKS/overlap-$me"; true')
    for me, other in (("a", "b"), ("b", "a")):
        commit_file(repo, f"app/{me}/package.json", json.dumps({
            "name": me, "private": True, "scripts": {"preinstall": f"sh ../../wait.sh {me} {other}",
                                                      "postinstall": f'touch "$MARKS/done-{me}"'}}))
    commit_file(repo, "wait.sh", wait + "\n")
    commit_file(repo, "scripts/reset_db.sh", '#!/bin/sh\n[ -e "$MARKS/done-a" ] && [ -e "$MARKS/done-b" ] '
                                             '&& touch "$MARKS/db-after-installs"\n')
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two clients")
    git(repo, "push", "-q", "origin", "main")
    monkeypatch.setenv("MARKS", str(marks))
    monkeypatch.setenv("ADW_INSTALL_DIRS", "app/a,app/b")
    s = inv_json(repo, "setup", "--adw-id", "par1")
    assert s["steps"]["install"]["outcome"] == "done"
    assert (marks / "overlap-a").exists() and (marks / "overlap-b").exists(), "both installs ran at once"
    assert (marks / "db-after-installs").exists()


def test_pool_json_matches_the_docs(repo):
    from test_docs import doc

    light(repo)
    filled = inv_json(repo, "pool", "--size", "1")
    assert set(filled) == set(doc("## `inv pool", 1))
    shown = inv_json(repo, "pool")
    assert set(shown) == set(doc("## `inv pool", 0))
    assert set(shown["entries"][0]) == set(doc("## `inv pool", 0)["entries"][0])
    state = inv_json(repo, "setup", "--adw-id", "j1")
    assert set(state) == set(doc("## `inv setup --json` (one agent)")) and state["from_pool"] is True


def test_a_postgres_database_per_agent_is_cloned_at_take(request, repo):
    """With ADW_DB_URL the database is named after the agent, so the pool never makes one: the take
    clones the agent's own and runs the reset script in it."""
    pytest.importorskip("psycopg")
    from test_postgres import agent_url, databases, runs

    pg_repo = request.getfixturevalue("pg_repo")
    pg_server, template = request.getfixturevalue("pg_server"), request.getfixturevalue("template_db")
    filled = inv_json(pg_repo, "pool", "--size", "1")
    assert filled["created"] and databases(pg_server, template) == []
    s = inv_json(pg_repo, "setup", "--adw-id", "pgp1")
    assert s["from_pool"] and s["steps"]["db"]["outcome"] == "done"
    assert databases(pg_server, template) == [f"{template}_pgp1"]
    assert runs(agent_url(pg_server, template, "pgp1")) == 1
    ports_env = (Path(s["worktree_path"]) / ".ports.env").read_text()
    assert filled["created"][0] not in ports_env and f"{template}_pgp1" in ports_env


def test_an_install_dir_added_after_the_fill_is_installed_at_take(tmp_path, repo, monkeypatch):
    app = sample_app.build(tmp_path / "plain", deps.find_tool("uv"), deps.find_tool("bun"))
    monkeypatch.setenv("ADW_INSTALL_DIRS", "app/server")
    inv_json(app, "pool", "--size", "1")
    monkeypatch.delenv("ADW_INSTALL_DIRS")
    out = inv(app, "setup", "--adw-id", "n1", "--json", check=True)
    line = next(x for x in out.stderr.splitlines() if "from the pool" in x)
    assert "reinstall: app/client (not an install dir when the pool was filled); db" in line, line
    installed = next(x for x in out.stderr.splitlines() if "install " in x and "done" in x)
    assert "app/client: bun" in installed and "app/server" not in installed, installed


# -- found by the second adversarial review -------------------------------------------------------


def test_a_pooled_worktree_someone_worked_in_is_kept_never_handed_out(repo):
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    [entry] = inv_json(repo, "pool")["entries"]
    wt = Path(entry["path"])
    lost = commit_file(wt, "stranger.txt", "committed in the pool\n")
    (wt / "notes.txt").write_text("uncommitted\n")
    state = inv_json(repo, "setup", "--adw-id", "p9", "--no-install", "--no-fetch")
    assert not state.get("from_pool") and not (repo / "trees/p9/notes.txt").exists()
    assert (wt / "notes.txt").read_text() == "uncommitted\n" and git(wt, "rev-parse", "HEAD") == lost
    assert [e["status"] for e in inv_json(repo, "pool")["entries"]] == ["kept"]


def test_an_edited_pool_record_pointing_at_a_user_worktree_is_refused(repo, tmp_path):
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    user_wt = tmp_path / "userwt"
    git(repo, "worktree", "add", "-q", "--detach", str(user_wt), "main")
    registry = repo / "agents/.grove/pool.json"
    data = json.loads(registry.read_text())
    [name] = data["entries"]
    data["entries"][name]["path"] = str(user_wt)
    registry.write_text(json.dumps(data))
    drained = inv(repo, "pool", "--size", "0")
    assert drained.returncode == 1 and "not one Grove made" in drained.stderr
    assert (user_wt / "README.md").is_file()
    report = json.loads(inv(repo, "doctor", "--json").stdout)
    assert "corrupt_pool_registry" in [p["kind"] for p in report["problems"]] and (user_wt / "README.md").is_file()


def test_resuming_a_kept_branch_with_a_pool_present(repo):
    inv(repo, "setup", "--adw-id", "r1", "--no-install", "--no-fetch", check=True)
    tip = commit_file(repo / "trees/r1", "w.txt", "kept work\n")
    inv(repo, "status", "--adw-id", "r1", "--set", "completed", check=True)
    inv(repo, "teardown", "--adw-id", "r1", check=True)
    inv(repo, "pool", "--size", "1", "--no-fetch", check=True)
    state = inv_json(repo, "setup", "--adw-id", "r1", "--no-install", "--no-fetch")
    assert git(repo / "trees/r1", "rev-parse", "HEAD") == tip and not state.get("from_pool")
    assert inv_json(repo, "pool")["ready"] == 1, "the pooled entry is still there for the next agent"


def test_a_take_goes_through_when_the_base_changed_a_file_the_fill_hid(repo):
    """Second review: the fill hides a tracked .env (skip-worktree); a newer base changing it made
    every take fail and destroyed an entry each time."""
    (repo / ".env").write_text("APP_MODE=dev\n")
    git(repo, "add", "-f", ".env")
    git(repo, "commit", "-qm", "tracked env")
    git(repo, "push", "-q", "origin", "main")
    inv(repo, "pool", "--size", "1", check=True)
    (repo / ".env").write_text("APP_MODE=dev\nFEATURE=on\n")
    git(repo, "commit", "-qam", "env changes")
    git(repo, "push", "-q", "origin", "main")
    state = inv_json(repo, "setup", "--adw-id", "e1", "--no-install")
    assert state["from_pool"] and "FEATURE=on" in (repo / "trees/e1/.env").read_text()
    assert f"BACKEND_PORT={state['backend_port']}" in (repo / "trees/e1/.env").read_text()


def test_a_half_taken_worktree_someone_committed_in_is_never_switched_over(repo):
    """A setup killed after the pool's worktree moved into trees/ leaves it detached; an agent then
    commits there. Setting the agent up again must not reset it to the base and point HEAD at a
    new branch, orphaning those commits (found by the model-based test, seed 847752462): it refuses,
    changes nothing, and teardown --force keeps the commits under refs/grove-backup/."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    assert inv(repo, "setup", "--adw-id", "k2", env={"GROVE_FAULT": "pool:after:move"}).returncode == -9
    wt = repo / "trees/k2"
    work = commit_file(wt, "work.txt", "made on the detached HEAD the kill left\n")
    again = inv(repo, "setup", "--adw-id", "k2")
    assert again.returncode == 1 and "committed in since" in again.stderr and "teardown" in again.stderr
    assert git(wt, "rev-parse", "HEAD") == work and (wt / "work.txt").is_file()
    done = inv_json(repo, "teardown", "--adw-id", "k2", "--force")
    assert any(git(repo, "rev-parse", ref) == work for ref in done["worktree_backup_refs"]), done

def test_a_half_taken_worktree_torn_down_takes_its_pool_record_with_it(repo):
    """A setup killed after the move, then torn down before any re-run: the record of its take went
    with the worktree. Left behind, it called the next agent of that id's worktree an interrupted
    take that no one could fix, and doctor stayed unhealthy (the model-based test, seed 847752462,
    under load)."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    assert inv(repo, "setup", "--adw-id", "k4", env={"GROVE_FAULT": "pool:after:move"}).returncode == -9
    work = commit_file(repo / "trees/k4", "work.txt", "made on the detached HEAD the kill left\n")
    done = inv_json(repo, "teardown", "--adw-id", "k4", "--force")
    assert any(git(repo, "rev-parse", ref) == work for ref in done["worktree_backup_refs"]), done
    assert not any(e.get("adw_id") == "k4" for e in inv_json(repo, "pool")["entries"])
    inv_json(repo, "setup", "--adw-id", "k4")
    report = inv_json(repo, "doctor")
    assert report["healthy"], report["problems"]


def test_a_teardown_finishes_whatever_the_pool_registry_holds(repo):
    """Teardown now reads the pool's records (to drop a half-done take's): one it cannot read is
    doctor's to report, never a teardown stopped halfway, its worktree gone and its state kept."""
    light(repo)
    inv_json(repo, "setup", "--adw-id", "k5")
    (repo / "agents/.grove/pool.json").write_text("{not json")
    done = inv_json(repo, "teardown", "--adw-id", "k5", "--force")
    assert done["worktree_removed"] and done["state_archive"] and not (repo / "trees/k5").exists()
    assert (repo / "agents/.grove/pool.json").read_text() == "{not json", "never overwritten"


def _salvaged(repo: Path, adw_id: str, path: str) -> list[str]:
    refs = git(repo, "for-each-ref", "--format=%(refname)", f"refs/grove-salvage/{adw_id}/").split()
    return [git(repo, "show", f"{ref}:{path}") for ref in refs]


def test_a_half_taken_worktree_someone_edited_is_saved_before_the_take_is_finished(repo):
    """Likewise for uncommitted edits: the switch's reset overwrites an edited tracked file. The re-run
    saves the edit under refs/grove-salvage/ first, then finishes the take and says where it is."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    wt = _half_taken(repo, "k3")
    (wt / "README.md").write_text("edited on the detached HEAD the kill left\n")
    done = inv(repo, "setup", "--adw-id", "k3")
    assert done.returncode == 0 and git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "adw/k3"
    assert _salvaged(repo, "k3", "README.md") == ["edited on the detached HEAD the kill left"]
    assert "since the killed run is saved in refs/grove-salvage/k3/" in done.stderr, done.stderr


def test_a_half_taken_worktree_with_only_new_files_is_finished_and_keeps_them(repo):
    """An untracked file is no reason to refuse: the switch's reset leaves it where it is."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    wt = _half_taken(repo, "k4")
    (wt / "notes.txt").write_text("an untracked note\n")
    assert inv_json(repo, "setup", "--adw-id", "k4")["status"] == "created"
    assert (wt / "notes.txt").read_text() == "an untracked note\n"
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "adw/k4"


def test_head_of_reads_a_worktree_s_head_from_git_s_files_or_defers_to_git(repo, tmp_path):
    """The take's proof that an entry is empty reads HEAD from the admin dir (issue 24): it must say
    what git says, and nothing (so git is asked) when the files do not answer plainly."""
    from grove.core import git as g

    head = git(repo, "rev-parse", "HEAD")
    detached, on_branch = tmp_path / "detached", tmp_path / "on-branch"
    git(repo, "worktree", "add", "-q", "--detach", str(detached), head)
    git(repo, "worktree", "add", "-q", "-b", "topic", str(on_branch), head)
    assert g.head_of(detached) == head == git(detached, "rev-parse", "HEAD")
    assert g.head_of(on_branch) == "ref: refs/heads/topic"
    admin = g.own_admin_dir(detached)
    # Placeholders git itself writes: `worktree add` before its checkout, and a reftable repository,
    # whose HEAD lives in the reftable (git 2.45+): git is asked then.
    for placeholder in ("garbage", "0" * 40, "ref: refs/heads/.invalid"):
        (admin / "HEAD").write_text(placeholder + "\n")
        assert g.head_of(detached) is None, placeholder
    (admin / "HEAD").write_text(head + "\n")
    (admin / "reftable").mkdir()
    assert g.head_of(detached) is None
    (admin / "reftable").rmdir()
    (admin / "HEAD").write_text(head + "\n")
    (detached / ".git").write_text(f"gitdir: {g.own_admin_dir(on_branch)}\n")  # names another worktree's admin dir
    assert g.head_of(detached) is None
    (detached / ".git").unlink()
    assert g.head_of(detached) is None and g.head_of(tmp_path / "nowhere") is None


def _as_a_dead_process_left_it(repo: Path, name: str, status: str) -> None:
    registry = repo / "agents/.grove/pool.json"
    data = json.loads(registry.read_text())
    data["entries"][name].update(status=status, pid=2 ** 22 + 1, pid_started=None)
    registry.write_text(json.dumps(data))


def _archived(repo: Path, name: str) -> list[str]:
    return sorted(p.name for p in (repo / "agents/.archive").rglob(name)) if (repo / "agents/.archive").exists() else []


@pytest.mark.parametrize("killed", ["inside worktree add", "inside worktree add, a file landed there since",
                                    "with a HEAD git cannot resolve", "inside worktree remove",
                                    "inside worktree remove, its .gitignore gone too",
                                    "inside worktree remove, someone's file there"])
def test_a_pool_entry_a_kill_inside_git_left_is_removed_and_nothing_in_it_lost(repo, killed):
    """A kill -9 inside git's own `worktree add` leaves HEAD at git's null placeholder ("locked
    initializing", nothing but the .git file); one inside `worktree remove` deletes the .git file among
    the others (in directory order: the .gitignore may go first), so git run there reads the main
    checkout. doctor --fix judged them "committed in" (at None) or "on a branch" and kept them
    forever (found by the concurrent model-based test, seed 1983938095), and a dead drain's entry went
    back to ready with no .git, to be handed out. Now the fill's and drain's leftovers are removed in
    one --fix, every file git cannot account for moved to the archive first. git's states are written
    as git leaves them: a kill inside one git process cannot be timed from here."""
    light(repo)
    path = Path(inv_json(repo, "pool", "--size", "1")["entries"][0]["path"])
    admin = Path(git(path, "rev-parse", "--absolute-git-dir"))
    if killed.startswith("inside worktree add"):
        for child in path.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        (admin / "index").unlink()
        (admin / "HEAD").write_text("0" * 40 + "\n")
        (admin / "locked").write_text("initializing")
        if killed.endswith("since"):
            (path / "scratch.db").write_text("someone's rows\n")
            with open(repo / ".git/info/exclude", "a") as exclude:
                exclude.write("scratch.db\n")  # as a global core.excludesFile ignores .DS_Store
        _as_a_dead_process_left_it(repo, path.name, "filling")
    elif killed == "with a HEAD git cannot resolve":  # what the concurrent seed's doctor reported: "at None"
        (admin / "HEAD").write_text("0" * 40 + "\n")
        _as_a_dead_process_left_it(repo, path.name, "filling")
    else:
        (path / ".git").unlink()
        (path / "README.md").unlink()
        if "gitignore" in killed:
            (path / ".gitignore").unlink()
        if killed.endswith("someone's file there"):
            (path / "notes.txt").write_text("someone's notes\n")
        _as_a_dead_process_left_it(repo, path.name, "draining")
    inv(repo, "doctor", "--json", "--fix")
    assert inv_json(repo, "doctor")["healthy"]
    assert not path.exists() and pool_entries(repo) == {}
    assert "/.pool/" not in git(repo, "worktree", "list", "--porcelain")
    if killed.endswith("since"):
        assert _archived(repo, "scratch.db") == ["scratch.db"]
    if killed.endswith("someone's file there"):
        assert _archived(repo, "notes.txt") == ["notes.txt"]
    assert inv_json(repo, "setup", "--adw-id", "after")["status"] == "created"


def _half_taken(repo: Path, adw_id: str) -> Path:
    assert inv(repo, "setup", "--adw-id", adw_id, env={"GROVE_FAULT": "pool:after:move"}).returncode == -9
    return repo / "trees" / adw_id


@pytest.mark.parametrize("work", ["a file where the base adds one", "a directory where the base adds a file",
                                  "a staged new file", "an edit, and the index deleted",
                                  "an edit marked assume-unchanged"])
def test_a_half_taken_worktree_with_work_the_switch_would_lose_is_saved_first(repo, work):
    """What the switch's `reset --hard` overwrites or deletes, whatever shape it has: an untracked file
    at a path the base adds, files in a directory where the base adds a file, a staged file in neither
    commit, an edit whose index someone deleted (`rm index` after "index file corrupt"), an edit git
    was told to assume unchanged. Each is in the salvage ref before the re-run finishes the take
    (found reviewing the resumed take: a rule for "nobody's work" missed some of them every time)."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    if work.startswith("a file where"):
        commit_file(repo, "notes.txt", "the base's notes\n")
    if work.startswith("a directory where"):
        commit_file(repo, "notes", "the base's notes\n")
    git(repo, "push", "-q", "origin", "main")
    wt = _half_taken(repo, "k5")
    name, text = {"a file where the base adds one": ("notes.txt", "the agent's own notes"),
                  "a directory where the base adds a file": ("notes/mine.md", "the agent's own notes"),
                  "a staged new file": ("new_module.py", "print('the agent wrote this')")}.get(
        work, ("README.md", "the agent's edit"))
    (wt / name).parent.mkdir(parents=True, exist_ok=True)
    (wt / name).write_text(text + "\n")
    if work == "a staged new file":
        git(wt, "add", name)
    if work.endswith("index deleted"):
        (Path(git(wt, "rev-parse", "--absolute-git-dir")) / "index").unlink()
    if work.endswith("assume-unchanged"):
        git(wt, "update-index", "--assume-unchanged", name)
    assert inv_json(repo, "setup", "--adw-id", "k5")["status"] == "created"
    assert _salvaged(repo, "k5", name) == [text]


def test_a_half_taken_worktree_whose_hidden_env_file_was_edited_is_never_switched_over(repo):
    """An edit to a tracked env file the fill hid (skip-worktree) holds the agent's env, which never
    goes into a git object: the re-run refuses with exit 1 and the edit stays where it is."""
    (repo / ".env").write_text("APP_MODE=dev\n")
    git(repo, "add", "-f", ".env")
    git(repo, "commit", "-qm", "a tracked env file")
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    wt = _half_taken(repo, "k9")
    text = (wt / ".env").read_text() + "MY_SECRET=the agent's\n"
    (wt / ".env").write_text(text)
    again = inv(repo, "setup", "--adw-id", "k9")
    assert again.returncode == 1 and "hidden env files edited since (.env)" in again.stderr, again.stderr
    assert (wt / ".env").read_text() == text


KILL_INSIDE_CHECKOUT = """#!/bin/sh
# A smudge filter: with the arm file present, kill -9 the git checkout running it and Grove above
# it, at the moment git has unlinked the file and not yet written it anew.
if [ -e "{arm}" ]; then
  rm -f "{arm}"
  kill -9 "$(awk '{{print $4}}' /proc/$PPID/stat)" "$PPID"
  sleep 2
fi
exec cat
"""


def test_a_take_killed_inside_its_checkout_is_finished_by_a_re_run(repo, tmp_path):
    """A real kill -9 inside the switch's reset, between git's unlink of a file the base changed and
    its write: the file is missing, which is nobody's work; the re-run finishes the take."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    commit_file(repo, "README.md", "sample app, changed by the base\n")
    git(repo, "push", "-q", "origin", "main")
    arm, killer = tmp_path / "arm", tmp_path / "killer.sh"
    killer.write_text(KILL_INSIDE_CHECKOUT.format(arm=arm))
    killer.chmod(0o755)
    git(repo, "config", "filter.killer.smudge", str(killer))
    (repo / ".git/info/attributes").write_text("README.md filter=killer\n")
    arm.touch()
    assert inv(repo, "setup", "--adw-id", "k6").returncode == -9
    (repo / ".git/info/attributes").unlink()
    assert not (repo / "trees/k6/README.md").exists(), "the kill came where it was meant to"
    assert inv_json(repo, "setup", "--adw-id", "k6")["status"] == "created"
    assert (repo / "trees/k6/README.md").read_text() == "sample app, changed by the base\n"


def test_a_half_taken_worktree_with_a_file_cut_short_by_the_kill_is_finished_by_a_re_run(repo):
    """A kill -9 while git writes a file leaves its first bytes: every one of them is in the commit,
    so it is nobody's work (test_review3's random kill inside the take's checkout met one in CI).
    Written here as git leaves it; an edit that is not such a start still refuses (above)."""
    light(repo)
    inv_json(repo, "pool", "--size", "1")
    commit_file(repo, "big.txt", "".join(f"line {i} of the base's new file\n" for i in range(2000)))
    git(repo, "push", "-q", "origin", "main")
    wt = _half_taken(repo, "k8")
    (wt / "big.txt").write_bytes(git(repo, "show", "main:big.txt").encode()[:4096])
    assert inv_json(repo, "setup", "--adw-id", "k8")["status"] == "created"
    assert (wt / "big.txt").read_text() == git(repo, "show", "main:big.txt") + "\n"


def test_a_half_taken_worktree_whose_files_git_normalises_is_finished_by_a_re_run(repo):
    """A file committed with CRLF before `.gitattributes` said `eol=lf`, never renormalised: hashed
    again in a fresh index it differs from every commit, though nobody touched it. The comparison
    starts from the worktree's own index, so a re-run after a kill finishes the take. A checkout
    slower than a second (a smudge filter here, a big repository in life) keeps the index from
    being racily clean, which would hide the problem."""
    light(repo)
    (repo / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    (repo / "zzz.txt").write_text("written last, slowly\n")
    git(repo, "add", "crlf.txt", "zzz.txt")
    git(repo, "commit", "-qm", "a file with CRLF")
    (repo / ".gitattributes").write_text("crlf.txt text eol=lf\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "attributes added later, not renormalised")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "config", "filter.sleepy.smudge", "sh -c 'sleep 1.5; cat'")
    (repo / ".git/info/attributes").write_text("zzz.txt filter=sleepy\n")
    inv_json(repo, "pool", "--size", "1")
    wt = _half_taken(repo, "k7")
    assert inv_json(repo, "setup", "--adw-id", "k7")["status"] == "created"
    assert (wt / "crlf.txt").read_bytes() == b"one\r\ntwo\r\n"


def _tracked_env(repo: Path) -> None:
    (repo / ".env").write_text("APP_MODE=dev\nBACKEND_PORT=1\n")
    git(repo, "add", "-f", ".env")
    git(repo, "commit", "-qm", "a tracked env file")
    git(repo, "push", "-q", "origin", "main")


def test_a_take_at_the_fills_commit_restores_what_the_fill_hid_and_what_went_missing(repo):
    """Issue 24 skips the switch's reset at the fill's commit only when it would write nothing. A
    tracked .env the fill hid holds its placeholder ports, and a tracked file deleted in the entry
    (no one's work: the commit has it) is missing: either way the reset runs, and the agent gets
    the commit's files with its own ports."""
    _tracked_env(repo)
    inv(repo, "pool", "--size", "1", check=True)
    [entry] = pool_entries(repo).values()
    assert entry["hidden"] == [".env"] and "BACKEND_PORT=1\n" not in (Path(entry["path"]) / ".env").read_text()
    (Path(entry["path"]) / "README.md").unlink()
    state = inv_json(repo, "setup", "--adw-id", "h1", "--no-install")
    wt = repo / "trees/h1"
    assert state["from_pool"] and (wt / "README.md").read_text() == (repo / "README.md").read_text()
    assert (wt / ".env").read_text().startswith("APP_MODE=dev\n")
    assert f"BACKEND_PORT={state['backend_port']}" in (wt / ".env").read_text()
    assert git(wt, "status", "--porcelain") == ""


MCP = '{"mcpServers": {"x": {"command": "./run.sh"}}}\n'


@pytest.mark.parametrize("kind", ["tracked env hidden", "config hidden as is", "ignored env"])
def test_a_pool_entry_whose_file_git_cannot_see_was_edited_is_kept_never_handed_out(repo, kind):
    """git status cannot see an edit to a file the fill hid (skip-worktree: a tracked .env it rewrote,
    a tracked config it hid as it is for the take to repoint) or to an ignored env file it wrote,
    and the take resets, repoints or rewrites each: the proof that an entry is empty compares them
    with the fill's record, and such an entry is kept, the edit where it was."""
    name = ".mcp.json" if kind == "config hidden as is" else ".env"
    if kind == "tracked env hidden":
        _tracked_env(repo)
    elif kind == "config hidden as is":
        commit_file(repo, ".mcp.json", MCP)
        git(repo, "push", "-q", "origin", "main")
    else:
        with open(repo / ".gitignore", "a") as ignore:
            ignore.write(".env\n")
        git(repo, "commit", "-qam", "ignore .env")
        git(repo, "push", "-q", "origin", "main")
        (repo / ".env").write_text("API_KEY=main\n")
    inv(repo, "pool", "--size", "1", check=True)
    [entry] = pool_entries(repo).values()
    edited = Path(entry["path"]) / name
    if kind == "config hidden as is":
        assert list(entry["hidden_as_is"]) == [name] and f"S {name}" in git(edited.parent, "ls-files", "-v")
    text = edited.read_text().replace("run.sh", "mine.sh") + ("MY_WORK=important\n" if name == ".env" else "")
    edited.write_text(text)
    state = inv_json(repo, "setup", "--adw-id", "h2", "--no-install")
    assert not state.get("from_pool") and edited.read_text() == text
    [kept] = inv_json(repo, "pool")["entries"]
    assert kept["status"] == "kept" and f"files the pool wrote or hid: {name}" in kept["reason"]


@pytest.mark.parametrize("change", ["config deleted", "ADW_PATH_CONFIGS changed"])
def test_a_take_at_the_fills_commit_never_leaves_a_config_hidden_that_it_does_not_repoint(repo, change):
    """Review of issue 24's fast take: the fill hides the tracked configs the take repoints. One
    deleted in the entry since (status cannot see it), or no longer among ADW_PATH_CONFIGS at take,
    must come back as the commit has it and visible to git, as a plain setup leaves it: the take
    resets instead of trusting the fill."""
    commit_file(repo, ".mcp.json", MCP)
    git(repo, "push", "-q", "origin", "main")
    inv(repo, "pool", "--size", "1", check=True)
    [entry] = pool_entries(repo).values()
    env = {}
    if change == "config deleted":
        (Path(entry["path"]) / ".mcp.json").unlink()
    else:
        env = {"ADW_PATH_CONFIGS": "playwright-mcp-config.json"}
    state = inv_json(repo, "setup", "--adw-id", "c1", "--no-install", env=env)
    wt = repo / "trees/c1"
    assert state["from_pool"] and (wt / ".mcp.json").is_file()
    listed = git(wt, "ls-files", "-v", "--", ".mcp.json")
    assert listed == ("S .mcp.json" if change == "config deleted" else "H .mcp.json"), listed
    if change == "ADW_PATH_CONFIGS changed":
        assert (wt / ".mcp.json").read_text() == MCP
        (wt / ".mcp.json").write_text('{"mcpServers": {"agent": {"command": "./a.sh"}}}\n')
        assert git(wt, "status", "--porcelain") == "M .mcp.json", "the agent's edit is visible to git"


def test_a_fill_whose_reset_script_writes_an_env_file_still_serves_its_entries(repo):
    """The fill's own database reset may write into an env file (DATABASE_URL): that is the fill's
    work, recorded as it left it, not someone's edit that keeps the entry."""
    with open(repo / ".gitignore", "a") as ignore:
        ignore.write(".env\n")
    commit_file(repo, "scripts/reset_db.sh", "#!/bin/sh\necho DATABASE_URL=sqlite:///app.db >> .env\n")
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "commit", "-qam", "a reset script that writes the env")
    git(repo, "push", "-q", "origin", "main")
    (repo / ".env").write_text("API_KEY=main\n")
    inv(repo, "pool", "--size", "1", check=True)
    [entry] = pool_entries(repo).values()
    assert "DATABASE_URL" in (Path(entry["path"]) / ".env").read_text()
    assert inv_json(repo, "setup", "--adw-id", "w1", "--no-install")["from_pool"]
