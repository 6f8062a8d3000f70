"""Issue 20: nothing is lost outside git either. Databases (item 3), bad numbers (item 11), liveness
(item 12), the pool (items 8, 9) and statuses that follow the facts (item 14b, 14c).

Real git repos with a bare origin, `grove`/`inv` as subprocesses, and the session's throwaway
PostgreSQL server (tests/pg_fixture.py) for the database tests. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from conftest import git, inv, inv_json, snapshot
from test_postgres import RESET, agent_url, journal, pg_repo, query  # noqa: F401 (pg_repo is a fixture)

from grove.core import pgdb

DAY = 86400


def write_rows(url: str, rows: int, start: int = 100000) -> None:
    """Insert ``rows`` rows, then make the server publish the write counters before returning
    (pg_stat_force_next_flush: the stats are flushed when this session goes idle, before the reply)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO items SELECT g, 'agent row' FROM generate_series({start}, {start + rows - 1}) g")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")


def count(url: str) -> int:
    return query(url, "SELECT count(*) FROM items")[0][0]


def backdate(repo: Path, adw_id: str, days: float = 30) -> None:
    """Make the agent look idle for ``days``: its state's updated_at, its files' mtimes, and the last
    write gc saw to its database."""
    then = time.time() - days * DAY
    path = repo / "agents" / adw_id / "adw_state.json"
    if path.exists():
        s = json.loads(path.read_text())
        s["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(then))
        path.write_text(json.dumps(s))
    for directory, _, files in os.walk(repo / "trees" / adw_id):
        for name in [*files, "."]:
            try:
                os.utime(os.path.join(directory, name), (then, then), follow_symlinks=False)
            except OSError:
                pass
    owned = repo / "agents/.grove/owned.json"
    data = json.loads(owned.read_text())
    for entry in data["database"].values():
        if entry.get("adw_id") == adw_id and entry.get("writes"):
            entry["writes"]["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(then))
    owned.write_text(json.dumps(data))


def dumps(repo: Path, adw_id: str | None = None) -> list[dict]:
    rows = inv_json(repo, "salvage", *(["--adw-id", adw_id] if adw_id else []))
    return [r for r in rows if r.get("kind") == "db_dump"]


# -- item 3: databases ---------------------------------------------------------------------------


def test_gc_counts_database_writes_as_activity_and_never_drops_a_resumable_agents_database(
        pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "idle", "--no-install", check=True)
    inv(pg_repo, "status", "--adw-id", "idle", "--set", "in_progress", check=True)
    url = agent_url(pg_server, template_db, "idle")
    backdate(pg_repo, "idle")
    write_rows(url, 1000)  # the agent works in its database only: no commit, no file written
    assert inv_json(pg_repo, "gc", "--dry-run")["abandoned"] == [], "a write to the database is activity"
    backdate(pg_repo, "idle")  # ...a month without a write since gc last looked
    assert [a["adw_id"] for a in inv_json(pg_repo, "gc", "--dry-run")["abandoned"]] == ["idle"]
    write_rows(url, 1, start=5000)
    assert inv_json(pg_repo, "gc", "--dry-run")["abandoned"] == [], "a new write since the last look"
    backdate(pg_repo, "idle")
    done = inv_json(pg_repo, "gc")
    assert [a["adw_id"] for a in done["removed"]] == ["idle"]
    # The agent can be resumed from its branch: gc kept its database, rows and all.
    assert count(url) == 2001
    assert journal(pg_repo)[pgdb.agent_db_name(template_db, "idle")]["kept"] is True
    assert inv(pg_repo, "doctor").returncode == 0, "a database gc kept is no orphan"
    back = inv_json(pg_repo, "setup", "--adw-id", "idle", "--no-install")
    assert back["database"]["name"] == pgdb.agent_db_name(template_db, "idle") and count(url) == 2001


def test_two_doctor_fixes_never_drop_the_database_of_an_agent_that_can_be_resumed(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "lost", "--no-install", check=True)
    url = agent_url(pg_server, template_db, "lost")
    write_rows(url, 1000)
    subprocess.run(["rm", "-rf", str(pg_repo / "trees/lost")], check=True)  # its worktree dir is lost
    first = json.loads(inv(pg_repo, "doctor", "--fix", "--json").stdout)
    assert [p["kind"] for p in first["problems"]] == ["directory_gone"] and first["healthy"], first
    second = json.loads(inv(pg_repo, "doctor", "--fix", "--json").stdout)
    assert second["problems"] == [] and second["healthy"], second
    assert count(url) == 2000, "the branch stays, so `grove setup --adw-id lost` resumes it: its database too"
    back = inv_json(pg_repo, "setup", "--adw-id", "lost", "--no-install")
    assert back["steps"]["db"]["outcome"] == "done" and count(url) == 2000


def test_teardown_dumps_the_database_before_dropping_it_and_salvage_restores_it(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "td", "--no-install", check=True)
    url = agent_url(pg_server, template_db, "td")
    name = pgdb.agent_db_name(template_db, "td")
    write_rows(url, 500)
    done = inv_json(pg_repo, "teardown", "--adw-id", "td", "--force")
    [db] = done["databases"]
    assert db["action"] == "dropped" and not pgdb.exists(pg_server.url(), name)
    dump = Path(db["dump"])
    assert dump.parent.name == "db" and dump.name == f"{name}.dump"
    assert dump.parent.parent.parent == pg_repo / "agents/.archive/td"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    for level in (dump.parent, dump.parent.parent, dump.parent.parent.parent):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    [row] = dumps(pg_repo, "td")
    assert row["path"] == str(dump) and row["name"] == name and row["adw_id"] == "td" and row["size"] > 0
    assert json.loads((dump.parent / "manifest.json").read_text())["dumps"][0]["file"] == dump.name
    # Set up again (a fresh clone of the template), then load the dump back.
    inv(pg_repo, "setup", "--adw-id", "td", "--no-install", check=True)
    assert count(url) == 1000
    restored = inv_json(pg_repo, "salvage", "--restore", str(dump))
    assert restored["database"] == name and count(url) == 1500
    assert Path(restored["saved_before"]).is_file(), "what the restore replaced was dumped first"
    assert len(dumps(pg_repo, "td")) == 2


def test_a_kept_database_is_dropped_by_an_explicit_teardown_of_its_agent_alone(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "kd", "--no-install", check=True)
    name = pgdb.agent_db_name(template_db, "kd")
    inv(pg_repo, "teardown", "--adw-id", "kd", "--force", "--keep-db", check=True)
    assert pgdb.exists(pg_server.url(), name)
    done = inv_json(pg_repo, "teardown", "--adw-id", "kd")  # no state or worktree left: only its database
    assert [d["action"] for d in done["databases"]] == ["dropped"] and Path(done["databases"][0]["dump"]).is_file()
    assert not pgdb.exists(pg_server.url(), name) and journal(pg_repo) == {}


def test_reset_db_dumps_the_old_database_first(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "rs", "--no-install", check=True)
    url = agent_url(pg_server, template_db, "rs")
    write_rows(url, 10)
    inv(pg_repo, "setup", "--adw-id", "rs", "--no-install", "--reset-db", check=True)
    assert count(url) == 1000
    [row] = dumps(pg_repo, "rs")
    inv(pg_repo, "salvage", "--restore", row["path"], "--adw-id", "rs", check=True)
    assert count(url) == 1010


def fake_pg_dump(tmp_path: Path) -> Path:
    """A pg_dump that looks new enough but fails every dump."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    tool = bindir / "pg_dump"
    tool.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 99.0"; exit 0; fi\n'
                    'echo "pg_dump: error: disk full" >&2\nexit 1\n')
    tool.chmod(0o755)
    return bindir


def test_without_a_working_pg_dump_nothing_is_dropped(pg_repo, pg_server, template_db, tmp_path):
    inv(pg_repo, "setup", "--adw-id", "nd", "--no-install", check=True)
    name = pgdb.agent_db_name(template_db, "nd")
    before = snapshot(pg_repo)
    missing = inv(pg_repo, "teardown", "--adw-id", "nd", "--force", env={"ADW_PG_BIN": str(tmp_path / "none")})
    assert missing.returncode == 1 and "pg_dump" in missing.stderr, missing.stderr
    assert snapshot(pg_repo) == before and pgdb.exists(pg_server.url(), name), "refused before any change"
    failing = inv(pg_repo, "teardown", "--adw-id", "nd", "--force", env={"ADW_PG_BIN": str(fake_pg_dump(tmp_path))})
    assert failing.returncode == 1 and "disk full" in failing.stderr, failing.stderr
    assert pgdb.exists(pg_server.url(), name) and name in journal(pg_repo), "the database and its record stay"
    again = inv_json(pg_repo, "teardown", "--adw-id", "nd", "--force")  # a working pg_dump finishes it
    assert [d["action"] for d in again["databases"]] == ["dropped"]
    assert not pgdb.exists(pg_server.url(), name) and journal(pg_repo) == {}


# -- item 11: bad numbers ------------------------------------------------------------------------

BAD = ["-1", "nan", "inf", "1e309", "abc", "-inf", "2.5"]
FLAGS = {  # flag -> (argv before it, argv after it, values that are wrong for it beyond BAD)
    "--max-age-days": (["gc"], [], ["-0.5", "36501"]),  # 0 is "every unfinished agent": allowed
    "--count": (["setup", "--epic", "E", "--no-install"], [], ["0", "-2", "1001"]),
    "--jobs": (["exec", "--all"], ["--", "true"], ["0", "1001"]),
    "--timeout": (["exec", "--all"], ["--", "true"], ["0"]),
    "--size": (["pool"], [], ["101"]),
}
FLAG_CASES = [(flag, value) for flag, (_, _, extra) in FLAGS.items() for value in BAD + extra
              if not (value == "2.5" and flag in ("--max-age-days", "--timeout"))]  # fractions are fine there


@pytest.mark.parametrize("flag,value", FLAG_CASES)
def test_a_bad_number_flag_exits_2_naming_it_and_changes_nothing(repo, flag, value):
    before_args, after_args, _ = FLAGS[flag]
    before = snapshot(repo)
    out = inv(repo, *before_args, f"{flag}={value}", *after_args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert flag in out.stderr and ("accepted" in out.stderr or "must be" in out.stderr), out.stderr
    assert "Traceback" not in out.stderr
    assert snapshot(repo) == before


KEYS = {  # key -> values that are wrong for it beyond BAD
    "ADW_PORT_SLOTS": ["0", "1001"],
    "ADW_BACKEND_PORT_BASE": ["0", "80", "70000"],
    "ADW_FRONTEND_PORT_BASE": ["0", "65536"],
    "ADW_EXTRA_PORTS": ["0", "99999"],
    "ADW_PUSH_RETRIES": ["101"],
    "ADW_DB_BUSY_TIMEOUT": ["0"],
    "ADW_LOCK_TIMEOUT": ["0"],
    "ADW_GIT_TIMEOUT": ["0"],
    "ADW_INSTALL_TIMEOUT": ["0"],
    "ADW_STOP_GRACE": ["0"],
}
SECONDS_KEYS = {"ADW_DB_BUSY_TIMEOUT", "ADW_LOCK_TIMEOUT", "ADW_GIT_TIMEOUT", "ADW_INSTALL_TIMEOUT", "ADW_STOP_GRACE"}
KEY_CASES = [(key, value) for key, extra in KEYS.items() for value in BAD + extra
             if not (value == "2.5" and key in SECONDS_KEYS)]


@pytest.mark.parametrize("key,value", KEY_CASES)
def test_a_bad_number_key_exits_2_naming_it_and_changes_nothing(repo, key, value):
    before = snapshot(repo)
    setting = f"DB_PORT={value}" if key == "ADW_EXTRA_PORTS" else value
    out = inv(repo, "setup", "--adw-id", "k1", "--no-install", env={key: setting})
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert key in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert snapshot(repo) == before


def test_gc_with_a_negative_or_nan_age_never_tears_down_an_active_agent(repo):
    inv(repo, "setup", "--adw-id", "busy", "--no-install", check=True)
    inv(repo, "status", "--adw-id", "busy", "--set", "in_progress", check=True)
    for value in ("-1", "nan"):
        out = inv(repo, "gc", "--max-age-days", value, "--json")
        assert out.returncode == 2 and json.loads(out.stdout)["exit_code"] == 2
        assert (repo / "trees/busy").is_dir() and (repo / "agents/busy/adw_state.json").is_file()
    assert inv_json(repo, "gc", "--max-age-days", "0.5")["removed"] == []  # a real age still works


def test_setup_count_sets_up_exactly_that_many(repo):
    done = inv_json(repo, "setup", "--epic", "E", "--count", "2", "--no-install")
    assert len(done["agents"]) == 2
    assert inv(repo, "setup", "--epic", "E", "--count", "-2", "--no-install").returncode == 2
    assert len(inv_json(repo, "list")) == 2


# -- item 12: liveness is a pid plus its start time ----------------------------------------------


@pytest.fixture
def sleeper():
    """A live process whose pid a test can pretend a dead holder had (a reused pid)."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_killed_fill_whose_pid_was_reused_is_reclaimed(repo, sleeper):
    from test_pool import light, pool_entries

    light(repo)
    assert inv(repo, "pool", "--size", "1", env={"GROVE_FAULT": "pool:after:add"}).returncode == -9
    [entry] = pool_entries(repo).values()
    assert entry["status"] == "filling"

    def reuse(data):  # the killed filler's pid now belongs to another process (the sleeper)
        for e in data["entries"].values():
            e["pid"] = sleeper.pid
            e["pid_started"] = e.get("pid_started") or "linux:another-boot:1"
    rewrite(repo / "agents/.grove/pool.json", reuse)
    report = json.loads(inv(repo, "doctor", "--json").stdout)
    assert [p["kind"] for p in report["problems"]] == ["pool_dead_process"] and not report["healthy"]
    assert inv_json(repo, "pool")["entries"][0]["alive"] is False
    drained = inv(repo, "pool", "--size", "0", "--json")
    assert drained.returncode == 0, drained.stderr
    assert pool_entries(repo) == {} and "/.pool/" not in git(repo, "worktree", "list", "--porcelain")
    assert sleeper.poll() is None, "the process that reused the pid was not touched"


def test_a_live_fill_and_an_old_pid_only_record_still_count_as_alive(repo, sleeper):
    from grove.core import liveness
    from test_pool import light, pool_entries

    light(repo)
    assert inv(repo, "pool", "--size", "1", env={"GROVE_FAULT": "pool:after:add"}).returncode == -9
    for record in (liveness.stamp(sleeper.pid), {"pid": sleeper.pid}):  # the same process; an older Grove's record
        def hold(data, record=record):
            for e in data["entries"].values():
                e.pop("pid_started", None)
                e.update(record)
        rewrite(repo / "agents/.grove/pool.json", hold)
        report = json.loads(inv(repo, "doctor", "--json").stdout)
        assert report["healthy"], report
        assert [e["status"] for e in pool_entries(repo).values()] == ["filling"]


def test_a_port_claim_whose_pid_was_reused_is_reclaimable(repo, sleeper):
    from grove.core import liveness

    inv(repo, "setup", "--adw-id", "a1", "--no-install", check=True)
    # Issue 23: claims are leases in the machine-wide registry (this test's own, from conftest).
    registry = Path(os.environ["ADW_PORT_REGISTRY"])
    leases = json.loads(registry.read_text())["leases"]
    assert leases[0].get("pid_started"), "a claim records its holder's start time"
    free = next(s for s in range(15) if s not in {lease["slot"] for lease in leases})
    ghost = dict(leases[0], adw_id="ghost", slot=free, ports={k: v + 1000 for k, v in leases[0]["ports"].items()},
                 worktree=str(repo / "trees/ghost"), state=str(repo / "agents/ghost/adw_state.json"),
                 pid=sleeper.pid, pid_started="linux:another-boot:1")
    rewrite(registry, lambda data: data["leases"].append(ghost))

    def set_ghost(**fields):
        rewrite(registry, lambda data: [lease.update(fields) for lease in data["leases"] if lease["adw_id"] == "ghost"])
    report = json.loads(inv(repo, "doctor", "--json").stdout)
    assert [(p["kind"], p.get("adw_id")) for p in report["problems"]] == [("dead_claim", "ghost")]
    # The same claim held by the live process itself (its real start time) is not reclaimable.
    set_ghost(**liveness.stamp(sleeper.pid))
    assert json.loads(inv(repo, "doctor", "--json").stdout)["healthy"]
    set_ghost(pid_started="linux:another-boot:1")
    fixed = json.loads(inv(repo, "doctor", "--fix", "--json").stdout)
    assert fixed["healthy"] and "ghost" not in [lease["adw_id"] for lease in json.loads(registry.read_text())["leases"]]


def test_liveness_tells_a_reused_pid_from_the_process_that_recorded_it(sleeper):
    from grove.core import liveness

    mine = liveness.stamp(sleeper.pid)
    assert mine["pid_started"] and liveness.holder_alive(mine)
    assert not liveness.holder_alive(dict(mine, pid_started="linux:another-boot:1"))
    assert liveness.holder_alive({"pid": sleeper.pid}), "a pid-only record: as before"
    sleeper.kill()
    sleeper.wait()
    assert not liveness.holder_alive(mine) and not liveness.holder_alive({"pid": None})


# -- item 8: a pooled setup gives what a plain setup gives ----------------------------------------

RESET_INCLUDED = """#!/bin/sh
# The app's reset: migrate/anonymise the database that came in through .worktreeinclude.
set -e
printf 'reset\\n' >> data/app.db
"""


def with_reset_script(repo: Path, script: str) -> Path:
    """``script`` as the repo's executable scripts/reset_db.sh, committed and pushed."""
    from conftest import commit_file

    commit_file(repo, "scripts/reset_db.sh", script)
    os.chmod(repo / "scripts/reset_db.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "reset script", "--allow-empty")
    git(repo, "push", "-q", "origin", "main")
    return repo


def included_db_repo(repo: Path) -> Path:
    from conftest import commit_file

    (repo / "data").mkdir()
    (repo / "data/app.db").write_text("raw\n")  # ignored (*.db): the main checkout's own copy
    commit_file(repo, ".worktreeinclude", "data/app.db\n")
    return with_reset_script(repo, RESET_INCLUDED)


def test_a_pooled_setup_resets_an_included_database_as_a_plain_setup_does(repo):
    included_db_repo(repo)
    plain = inv_json(repo, "setup", "--adw-id", "plain", "--no-pool")
    expected = (repo / "trees/plain/data/app.db").read_text()
    assert expected == "raw\nreset\n" and not plain.get("from_pool")
    inv_json(repo, "pool", "--size", "1")
    pooled = inv_json(repo, "setup", "--adw-id", "pooled")
    assert pooled["from_pool"], pooled
    assert (repo / "trees/pooled/data/app.db").read_text() == expected, "the agent got what a plain setup gives"
    # The main checkout's copy changes after the fill: the pooled entry is copied and reset again.
    inv_json(repo, "pool", "--size", "1")
    (repo / "data/app.db").write_text("raw v2\n")
    again = inv_json(repo, "setup", "--adw-id", "pooled2")
    assert again["from_pool"] and again["steps"]["db"]["outcome"] == "done", again["steps"]["db"]
    assert (repo / "trees/pooled2/data/app.db").read_text() == "raw v2\nreset\n"


# -- item 9: what the fill itself changed is Grove's own --------------------------------------------

PYPROJECT = '[project]\nname = "srv"\nversion = "0.0.9"\nrequires-python = ">=3.8"\ndependencies = []\n'
STALE_LOCK = ('version = 1\nrevision = 5\nrequires-python = ">=3.8"\n\n[[package]]\nname = "srv"\n'
              'version = "0.1.0"\nsource = { virtual = "." }\n')
OFFLINE = {"UV_OFFLINE": "1"}


def stale_lock_repo(repo: Path) -> Path:
    from conftest import commit_file

    commit_file(repo, "app/server/pyproject.toml", PYPROJECT)
    commit_file(repo, "app/server/uv.lock", STALE_LOCK)  # `uv sync` rewrites it: the lock is stale
    git(repo, "push", "-q", "origin", "main")
    return repo


def test_a_fill_whose_install_rewrites_a_tracked_lock_file_is_still_served_and_drained(repo):
    from test_pool import pool_entries

    stale_lock_repo(repo)
    inv(repo, "setup", "--adw-id", "plain", "--no-pool", env=OFFLINE, check=True)
    plain_lock = (repo / "trees/plain/app/server/uv.lock").read_text()
    assert plain_lock != STALE_LOCK
    filled = inv(repo, "pool", "--size", "2", env=OFFLINE)
    assert filled.returncode == 0, filled.stderr
    assert "app/server/uv.lock" in filled.stderr, "a fill that changes tracked files says so"
    for adw_id in ("p1", "p2"):
        s = inv_json(repo, "setup", "--adw-id", adw_id, env=OFFLINE)
        assert s["from_pool"], s
        # Exactly what the plain setup gave: the install ran again there and rewrote the lock alike.
        assert (repo / f"trees/{adw_id}/app/server/uv.lock").read_text() == plain_lock
    inv_json(repo, "pool", "--size", "2", env=OFFLINE)
    drained = inv(repo, "pool", "--size", "0", "--json", env=OFFLINE)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert pool_entries(repo) == {}
    assert json.loads(inv(repo, "doctor", "--fix", "--json").stdout)["healthy"]


def test_a_change_someone_made_over_the_fills_own_is_still_kept(repo):
    from test_pool import pool_entries

    stale_lock_repo(repo)
    inv_json(repo, "pool", "--size", "1", env=OFFLINE)
    [entry] = pool_entries(repo).values()
    lock = Path(entry["path"]) / "app/server/uv.lock"
    lock.write_text(lock.read_text() + "# someone's edit\n")
    drained = inv(repo, "pool", "--size", "0", "--json", env=OFFLINE)
    assert drained.returncode == 1 and "uv.lock" in drained.stderr
    assert lock.read_text().endswith("# someone's edit\n")


# -- item 14b: a status follows the facts ----------------------------------------------------------


def test_an_agent_that_commits_during_merge_cleanup_is_not_marked_merged_nor_removed(repo):
    from conftest import commit_file

    inv(repo, "setup", "--adw-id", "late", "--no-install", check=True)
    wt = repo / "trees/late"
    commit_file(wt, "first.txt", "first\n")
    inv(repo, "status", "--adw-id", "late", "--set", "completed", check=True)
    # The validation runs after the branch was merged and before the base moves: the agent commits then.
    sneak = f"printf 'late\\n' > {wt}/late.txt && git -C {wt} add late.txt && git -C {wt} commit -qm late"
    done = json.loads(inv(repo, "merge", "--adw-id", "late", "--cleanup", "--validate", sneak, "--json").stdout)
    [r] = done["results"]
    assert r["outcome"] == "merged" and r["status"] == "completed", r
    assert any("late" in e and "not in" in e for e in done["errors"]), done["errors"]
    assert "cleanup" not in r and wt.is_dir(), "an agent with unmerged commits is not cleaned up as merged"
    assert inv_json(repo, "status", "--adw-id", "late")["status"] == "completed"
    again = inv_json(repo, "merge", "--adw-id", "late")  # and the late commit merges next time
    assert again["results"][0]["outcome"] == "merged" and again["results"][0]["status"] == "merged"
    assert git(repo, "show", "main:late.txt") == "late"


def test_a_merged_agent_with_commits_not_in_the_base_can_be_set_back_to_completed(repo):
    from conftest import commit_file

    inv(repo, "setup", "--adw-id", "back", "--no-install", check=True)
    wt = repo / "trees/back"
    commit_file(wt, "one.txt", "one\n")
    inv(repo, "status", "--adw-id", "back", "--set", "completed", check=True)
    inv_json(repo, "merge", "--adw-id", "back")
    refused = inv(repo, "status", "--adw-id", "back", "--set", "completed")
    assert refused.returncode == 2 and "is in the base" in refused.stderr, "nothing new: merged is the fact"
    commit_file(wt, "two.txt", "two\n")  # committed after it was marked merged
    s = inv_json(repo, "status", "--adw-id", "back", "--set", "completed")
    assert s["status"] == "completed"
    assert inv_json(repo, "merge", "--adw-id", "back")["results"][0]["status"] == "merged"
    assert git(repo, "show", "main:two.txt") == "two"
    manual = inv(repo, "status", "--adw-id", "back", "--set", "merged")  # already merged: a no-op
    assert manual.returncode == 0


# -- item 14c: merge --json stopped by SIGTERM still prints its one document ----------------------


def test_merge_json_stopped_by_sigterm_during_validation_prints_one_document(repo, tmp_path):
    import signal

    from conftest import cli, commit_file

    inv(repo, "setup", "--adw-id", "sig", "--no-install", check=True)
    commit_file(repo / "trees/sig", "s.txt", "s\n")
    inv(repo, "status", "--adw-id", "sig", "--set", "completed", check=True)
    started = tmp_path / "validation-started"
    before = git(repo, "rev-parse", "main")
    merge = subprocess.Popen([*cli(), "merge", "--adw-id", "sig", "--json", "--validate",
                              f"touch {started} && sleep 60"], cwd=repo, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # bounded wait for the validation to start (no timing assertion)
            if started.exists() or merge.poll() is not None:
                break
            time.sleep(0.1)
        assert started.exists(), merge.communicate()
        merge.send_signal(signal.SIGTERM)
        out, err = merge.communicate(timeout=60)
    finally:
        if merge.poll() is None:
            merge.kill()
    doc = json.loads(out)  # exactly one JSON document
    assert merge.returncode == 130 and doc["exit_code"] == 130, (merge.returncode, out, err)
    assert "interrupted" in doc["error"] and "nothing was merged" in doc["error"]
    assert git(repo, "rev-parse", "main") == before
    assert inv_json(repo, "status", "--adw-id", "sig")["status"] == "completed"


# -- item 3, sqlite: a file copy before a reset overwrites it; its writes are activity ------------

SQLITE_RESET = """#!/bin/sh
set -e
mkdir -p data
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("data/app.db")
db.execute("CREATE TABLE IF NOT EXISTS items (label TEXT)")
db.execute("DELETE FROM items")
db.execute("INSERT INTO items VALUES ('seed')")
db.commit()
PY
"""


def sqlite_rows(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return sorted(r[0] for r in db.execute("SELECT label FROM items"))


def sqlite_repo(repo: Path) -> Path:
    return with_reset_script(repo, SQLITE_RESET)


def test_reset_db_copies_an_sqlite_database_first_and_salvage_restores_it(repo):
    import sqlite3

    sqlite_repo(repo)
    inv(repo, "setup", "--adw-id", "sq", "--no-install", check=True)
    db = repo / "trees/sq/data/app.db"
    with sqlite3.connect(db) as conn:  # the agent's rows, in WAL mode: some only in the -wal file
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("INSERT INTO items VALUES ('agent work')")
    assert sqlite_rows(db) == ["agent work", "seed"]
    inv(repo, "setup", "--adw-id", "sq", "--no-install", "--reset-db", check=True)
    assert sqlite_rows(db) == ["seed"]
    [row] = dumps(repo, "sq")
    assert row["engine"] == "sqlite" and row["source"] == "data/app.db"
    assert stat.S_IMODE(Path(row["path"]).stat().st_mode) == 0o600
    assert sqlite_rows(Path(row["path"])) == ["agent work", "seed"]
    restored = inv_json(repo, "salvage", "--restore", row["path"])
    assert sqlite_rows(db) == ["agent work", "seed"] and Path(restored["saved_before"]).is_file()


def test_db_reset_of_an_adopted_worktree_saves_its_sqlite_rows_to_that_agent_s_archive(repo, tmp_path):
    """An adopted worktree's directory need not carry its agent's id: the copy before a reset goes
    to the agent's archive, not to that of whatever agent shares the directory's name."""
    import sqlite3

    sqlite_repo(repo)
    outside = tmp_path / "mine"
    git(repo, "worktree", "add", "-q", "-b", "feat/mine", str(outside), "main")
    inv(repo, "adopt", str(outside), "--adw-id", "other-id", "--no-install", check=True)
    with sqlite3.connect(outside / "data/app.db") as conn:
        conn.execute("INSERT INTO items VALUES ('agent work')")
    inv(repo, "db.reset", "--adw-id", "other-id", check=True)
    assert sqlite_rows(outside / "data/app.db") == ["seed"]
    [row] = dumps(repo, "other-id")
    assert sqlite_rows(Path(row["path"])) == ["agent work", "seed"]
    assert not (repo / "agents/.archive/mine").exists()


def test_gc_counts_a_write_to_an_sqlite_database_as_activity(repo):
    import sqlite3

    sqlite_repo(repo)
    inv(repo, "setup", "--adw-id", "sqa", "--no-install", check=True)
    inv(repo, "status", "--adw-id", "sqa", "--set", "in_progress", check=True)
    backdate(repo, "sqa")
    assert [a["adw_id"] for a in inv_json(repo, "gc", "--dry-run")["abandoned"]] == ["sqa"]
    with sqlite3.connect(repo / "trees/sqa/data/app.db") as conn:
        conn.execute("INSERT INTO items VALUES ('agent work')")
    assert inv_json(repo, "gc", "--dry-run")["abandoned"] == []


def test_gc_still_decides_when_the_database_server_cannot_be_asked(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "far", "--no-install", check=True)
    inv(pg_repo, "status", "--adw-id", "far", "--set", "in_progress", check=True)
    backdate(pg_repo, "far")
    refused = {"ADW_DB_URL": pg_server.url(user="no_such_role")}  # same server, a login it refuses
    assert [a["adw_id"] for a in inv_json(pg_repo, "gc", "--dry-run", env=refused)["abandoned"]] == ["far"]
    assert [a["adw_id"] for a in inv_json(pg_repo, "gc", env=refused)["removed"]] == ["far"]
    assert pgdb.exists(pg_server.url(), pgdb.agent_db_name(template_db, "far")), "gc kept the database"
