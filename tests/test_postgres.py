"""A Postgres database per agent (issue 14), end to end: `inv`/`grove` against a real server.

One session-scoped server (tests/pg_fixture.py, a Unix socket in a temp dir); each test gets its
own seeded template, so database names never collide between tests. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psycopg
import pytest

from conftest import LIB, git, inv, inv_json, snapshot
import pg_fixture
from pg_fixture import SECRET, password_role  # noqa: F401 (a fixture)

from grove.core import pgdb

RESET = """#!/usr/bin/env bash
# The app's own reset script: it migrates on top of the clone, with the agent's DATABASE_URL.
set -euo pipefail
"$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" \
  -c "CREATE TABLE IF NOT EXISTS resets (adw_id text NOT NULL)" -c "INSERT INTO resets VALUES ('$ADW_ID')"
"""


@pytest.fixture
def pg_repo(repo, pg_server, template_db, monkeypatch):
    """A repo whose .env-level config points Grove at the test server and a fresh template."""
    monkeypatch.setenv("ADW_DB_URL", pg_server.url())
    monkeypatch.setenv("ADW_DB_TEMPLATE", template_db)
    monkeypatch.setenv("PSQL", str(pg_server.bindir / "psql"))
    script = repo / "scripts/reset_db.sh"
    script.parent.mkdir()
    script.write_text(RESET)
    script.chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reset script")
    git(repo, "push", "-q", "origin", "main")
    return repo


def query(url: str, sql: str):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else None


def runs(url: str) -> int:
    """How often the reset script ran in this database."""
    return query(url, "SELECT count(*) FROM resets")[0][0]


def agent_url(pg_server, template: str, adw_id: str) -> str:
    return pgdb.agent_url(pg_server.url(), pgdb.agent_db_name(template, adw_id))


def databases(pg_server, template: str) -> list[str]:
    return pgdb.list_databases(pg_server.url(), template + "_")


def journal(repo) -> dict:
    path = repo / "agents/.grove/owned.json"
    return json.loads(path.read_text())["database"] if path.exists() else {}


def dotenv(path) -> dict:
    from dotenv import dotenv_values

    return dotenv_values(path, interpolate=False)


# -- the happy path ----------------------------------------------------------------------------


def test_ten_agents_at_once_get_ten_isolated_databases(pg_repo, pg_server, template_db):
    ids = [f"p{i}" for i in range(10)]
    out = inv_json(pg_repo, "setup", *[a for i in ids for a in ("--adw-id", i)], "--no-install")
    assert not out["errors"] and len(out["agents"]) == 10
    assert sorted(databases(pg_server, template_db)) == sorted(pgdb.agent_db_name(template_db, i) for i in ids)
    urls = set()
    for adw_id in ids:
        url = agent_url(pg_server, template_db, adw_id)
        tree = pg_repo / "trees" / adw_id
        assert dotenv(tree / ".ports.env")["DATABASE_URL"] == url
        assert dotenv(tree / ".env")["DATABASE_URL"] == url  # every merged env file
        urls.add(url)
        # The seed came along, and the reset script ran on top of the clone with the agent's URL.
        assert query(url, "SELECT count(*) FROM items")[0][0] == 1000
        assert query(url, "SELECT adw_id FROM resets") == [(adw_id,)]
    assert len(urls) == 10
    states = {s["adw_id"]: s for s in out["agents"]}
    assert states["p3"]["database"] == {"name": pgdb.agent_db_name(template_db, "p3"),
                                        "url": agent_url(pg_server, template_db, "p3"), "template": template_db}
    assert {info["adw_id"] for info in journal(pg_repo).values()} == set(ids)
    # One agent's writes are invisible to the others (and to the template).
    query(agent_url(pg_server, template_db, "p0"), "INSERT INTO items VALUES (-1, 'p0 only')")
    for adw_id in ids[1:]:
        assert query(agent_url(pg_server, template_db, adw_id), "SELECT count(*) FROM items WHERE id = -1")[0][0] == 0
    assert query(pg_server.url(template_db), "SELECT count(*) FROM items")[0][0] == 1000
    assert inv(pg_repo, "doctor").returncode == 0


def test_rerun_keeps_the_database_and_reset_db_recreates_it(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "keep", "--no-install", check=True)
    url = agent_url(pg_server, template_db, "keep")
    query(url, "INSERT INTO items VALUES (-1, 'the agent''s work')")
    again = inv_json(pg_repo, "setup", "--adw-id", "keep", "--no-install")
    assert again["steps"]["db"]["outcome"] == "kept"
    assert query(url, "SELECT count(*) FROM items WHERE id = -1")[0][0] == 1, "a re-run never wipes the agent's rows"
    assert runs(url) == 1, "the reset script did not run twice"
    reset = inv_json(pg_repo, "setup", "--adw-id", "keep", "--no-install", "--reset-db")
    assert reset["steps"]["db"]["outcome"] == "done"
    assert query(url, "SELECT count(*) FROM items WHERE id = -1")[0][0] == 0
    assert query(url, "SELECT count(*) FROM items")[0][0] == 1000 and runs(url) == 1  # a fresh clone, migrated
    query(url, "INSERT INTO items VALUES (-2, 'more work')")
    step = inv_json(pg_repo, "db.reset", "--adw-id", "keep")  # the single-step task recreates it too
    assert step["outcome"] == "done" and "recreated" in step["detail"]
    assert query(url, "SELECT count(*) FROM items WHERE id = -2")[0][0] == 0


def test_a_database_that_vanished_is_made_again_on_rerun(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "gone", "--no-install", check=True)
    name = pgdb.agent_db_name(template_db, "gone")
    pgdb.drop(pg_server.url(), name)  # someone dropped it by hand
    again = inv_json(pg_repo, "setup", "--adw-id", "gone", "--no-install")
    assert again["steps"]["db"]["outcome"] == "done"
    assert runs(agent_url(pg_server, template_db, "gone")) == 1


def test_teardown_drops_it_and_keep_db_keeps_it(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "t1", "--adw-id", "t2", "--no-install", check=True)
    url = agent_url(pg_server, template_db, "t1")
    holder = psycopg.connect(url)  # an app still connected: teardown ends its session
    try:
        done = inv_json(pg_repo, "teardown", "--adw-id", "t1", "--force")
    finally:
        holder.close()
    assert [(d["name"], d["action"]) for d in done["databases"]] == [(pgdb.agent_db_name(template_db, "t1"), "dropped")]
    assert databases(pg_server, template_db) == [pgdb.agent_db_name(template_db, "t2")]
    kept = inv_json(pg_repo, "teardown", "--adw-id", "t2", "--force", "--keep-db")
    assert [d["action"] for d in kept["databases"]] == ["kept"]
    assert databases(pg_server, template_db) == [pgdb.agent_db_name(template_db, "t2")]
    assert list(journal(pg_repo)) == [pgdb.agent_db_name(template_db, "t2")]
    assert inv(pg_repo, "doctor").returncode == 0, "a database kept on purpose is not an orphan"
    # Setting the same agent up again takes its kept database back, rows and all.
    again = inv_json(pg_repo, "setup", "--adw-id", "t2", "--no-install")
    assert again["steps"]["db"]["outcome"] == "done"
    assert runs(agent_url(pg_server, template_db, "t2")) == 2  # its rows, and the script ran on top
    inv(pg_repo, "teardown", "--adw-id", "t2", "--force", check=True)
    assert databases(pg_server, template_db) == [] and journal(pg_repo) == {}


def test_name_from_adw_db_name_and_a_shared_name_is_refused(pg_repo, pg_server, template_db, monkeypatch):
    monkeypatch.setenv("ADW_DB_NAME", "dev_{adw_id}_" + template_db)
    inv(pg_repo, "setup", "--adw-id", "n1", "--no-install", check=True)
    assert pgdb.exists(pg_server.url(), f"dev_n1_{template_db}")
    monkeypatch.setenv("ADW_DB_NAME", f"dev_n1_{template_db}")  # one fixed name for every agent
    before = snapshot(pg_repo)
    out = inv(pg_repo, "setup", "--adw-id", "n2", "--no-install")
    assert out.returncode == 2 and "same name" in out.stderr and "{adw_id}" in out.stderr
    assert snapshot(pg_repo) == before
    inv(pg_repo, "teardown", "--adw-id", "n1", "--force", check=True)


# -- crashes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["setup:before:db", "db:after:record", "db:after:create", "setup:after:db"])
def test_kill_during_the_db_step_then_doctor_and_rerun_converge(pg_repo, pg_server, template_db, point):
    out = inv(pg_repo, "setup", "--adw-id", "k", "--no-install", env={"GROVE_FAULT": point})
    assert out.returncode == -signal.SIGKILL
    doctor = inv_json_any(pg_repo, "doctor")
    assert {p["kind"] for p in doctor["problems"]} <= {"incomplete_setup"}, doctor
    inv(pg_repo, "setup", "--adw-id", "k", "--no-install", check=True)
    name = pgdb.agent_db_name(template_db, "k")
    assert databases(pg_server, template_db) == [name]
    assert runs(agent_url(pg_server, template_db, "k")) >= 1
    assert journal(pg_repo)[name]["oid"] == pgdb.database_oid(pg_server.url(), name)
    assert inv(pg_repo, "doctor").returncode == 0
    inv(pg_repo, "teardown", "--adw-id", "k", "--force", check=True)
    assert databases(pg_server, template_db) == [] and journal(pg_repo) == {}


@pytest.mark.parametrize("point", ["teardown:before:worktree", "teardown:after:forget-db", "teardown:after:db"])
def test_kill_during_teardown_never_drops_an_unrecorded_database(pg_repo, pg_server, template_db, point):
    inv(pg_repo, "setup", "--adw-id", "tk", "--no-install", check=True)
    name = pgdb.agent_db_name(template_db, "tk")
    out = inv(pg_repo, "teardown", "--adw-id", "tk", "--force", env={"GROVE_FAULT": point})
    assert out.returncode == -signal.SIGKILL
    again = inv(pg_repo, "teardown", "--adw-id", "tk", "--force")
    assert again.returncode == 0, again.stderr
    assert inv(pg_repo, "doctor").returncode == 0 and journal(pg_repo) == {}
    # Forgotten just before the DROP: a kill in between leaves the database unowned, so it is kept
    # (a leak, the safe direction), never dropped without a record.
    assert pgdb.exists(pg_server.url(), name) == (point == "teardown:after:forget-db")
    pgdb.drop(pg_server.url(), name)


def inv_json_any(repo, *args):
    """--json output of a task whatever its exit code (doctor exits 1 when it finds problems)."""
    return json.loads(inv(repo, *args, "--json").stdout)


def test_orphan_database_is_listed_and_fix_drops_it(pg_repo, pg_server, template_db):
    out = inv(pg_repo, "setup", "--adw-id", "orph", "--no-install", env={"GROVE_FAULT": "db:after:create"})
    assert out.returncode == -signal.SIGKILL
    # The agent then vanished by hand: its worktree, state and branch are gone, its database is not.
    # (While its branch exists the agent can be resumed, and its database is no orphan: issue 20.)
    git(pg_repo, "worktree", "remove", "--force", str(pg_repo / "trees/orph"))
    subprocess.run(["rm", "-rf", str(pg_repo / "agents/orph")], check=True)
    for branch in git(pg_repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split():
        if branch != "main":
            git(pg_repo, "branch", "-D", branch)
    name = pgdb.agent_db_name(template_db, "orph")
    found = inv_json_any(pg_repo, "doctor")
    orphans = [p for p in found["problems"] if p["kind"] == "orphan_database"]
    assert [(p["database"], p["adw_id"]) for p in orphans] == [(name, "orph")]
    assert pgdb.exists(pg_server.url(), name), "doctor without --fix changes nothing"
    fixed = inv_json_any(pg_repo, "doctor", "--fix")
    assert all(p["fixed"] for p in fixed["problems"]), fixed
    assert not pgdb.exists(pg_server.url(), name) and journal(pg_repo) == {}
    assert [os.path.basename(p["dump"]) for p in fixed["problems"] if p["kind"] == "orphan_database"] == [f"{name}.dump"], "dumped before the drop"
    assert inv(pg_repo, "doctor").returncode == 0


# -- what Grove did not create -------------------------------------------------------------------


def test_a_database_not_in_the_journal_is_never_touched(pg_repo, pg_server, template_db):
    name = pgdb.agent_db_name(template_db, "mine")
    pg_server.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')  # the user's own, same name
    pg_server.psql("INSERT INTO items VALUES (-7, 'user data')", dbname=name)
    before = snapshot(pg_repo)
    out = inv(pg_repo, "setup", "--adw-id", "mine", "--no-install")
    assert out.returncode == 1 and "Grove did not create it" in out.stderr
    assert snapshot(pg_repo)["worktrees"] == before["worktrees"] and journal(pg_repo) == {}  # rolled back
    for args in (["setup", "--adw-id", "mine", "--no-install", "--reset-db"], ["doctor", "--fix"]):
        inv(pg_repo, *args)
    assert query(pgdb.agent_url(pg_server.url(), name), "SELECT count(*) FROM items WHERE id = -7")[0][0] == 1
    pgdb.drop(pg_server.url(), name)


def test_a_recorded_name_now_holding_someone_elses_database_is_left_alone(pg_repo, pg_server, template_db):
    inv(pg_repo, "setup", "--adw-id", "swap", "--no-install", check=True)
    name = pgdb.agent_db_name(template_db, "swap")
    pgdb.drop(pg_server.url(), name)  # the user drops Grove's database and makes their own of that name
    pg_server.psql(f'CREATE DATABASE "{name}"')
    again = inv(pg_repo, "setup", "--adw-id", "swap", "--no-install", "--reset-db")
    assert again.returncode == 1 and "Grove did not create it" in again.stderr
    inv(pg_repo, "status", "--adw-id", "swap", "--set", "failed", check=True)
    done = inv_json(pg_repo, "teardown", "--adw-id", "swap", "--force")
    assert [d["action"] for d in done["databases"]] == ["not_owned"]
    assert pgdb.exists(pg_server.url(), name) and journal(pg_repo) == {}
    pgdb.drop(pg_server.url(), name)


# -- bad input and failures ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}%zz@h/db",
    f"mysql://u:{SECRET}@h/db",
    "postgresql:///postgres?host=/tmp/x&port=nope",
    "postgresql:///postgres?sslmode=bogus",
    f"host=/tmp password={SECRET}",
])
def test_malformed_url_exits_2_and_changes_nothing(repo, url):
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "bad", "--no-install", "--json", env={"ADW_DB_URL": url})
    assert out.returncode == 2 and "ADW_DB_URL" in out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert json.loads(out.stdout)["exit_code"] == 2
    assert snapshot(repo) == before


@pytest.mark.parametrize("env, message", [
    ({"ADW_DB_TEMPLATE": "tpl"}, "ADW_DB_TEMPLATE is set but ADW_DB_URL is not"),
    ({"ADW_DB_NAME": "x_{adw_id}"}, "ADW_DB_NAME is set but ADW_DB_URL is not"),
    ({"ADW_DB_URL_VAR": "1BAD"}, "not an environment variable name"),
    ({"ADW_COMPOSE_PROJECT_VAR": "BACKEND_PORT"}, "collides"),
    ({"ADW_DB_BUSY_TIMEOUT": "0"}, "must be positive"),
])
def test_bad_database_config_exits_2(repo, env, message):
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "cfg", "--no-install", env=env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert snapshot(repo) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_exits_1_with_a_hint_and_no_password(repo):
    before = snapshot(repo)
    url = f"postgresql://grove:{SECRET}@127.0.0.1:{_closed_port()}/postgres"
    out = inv(repo, "setup", "--adw-id", "down", "--no-install", "--json", env={"ADW_DB_URL": url})
    assert out.returncode == 1
    assert "cannot connect to PostgreSQL" in out.stderr and "start the server" in out.stderr
    assert SECRET not in out.stdout + out.stderr and "grove:***@" in out.stderr
    assert snapshot(repo) == before  # found out in the validate step, before any change


def test_template_in_use_fails_clearly_after_a_bounded_retry(pg_repo, pg_server, template_db):
    with psycopg.connect(pg_server.url(template_db), application_name="seed-editor"):
        out = inv(pg_repo, "setup", "--adw-id", "busy", "--no-install", env={"ADW_DB_BUSY_TIMEOUT": "0.5"})
    assert out.returncode == 1
    assert f"cannot clone template database '{template_db}': it is in use" in out.stderr
    assert "seed-editor" in out.stderr and "pg_terminate_backend" in out.stderr
    assert databases(pg_server, template_db) == [] and journal(pg_repo) == {}
    inv(pg_repo, "setup", "--adw-id", "busy", "--no-install", check=True)  # free again: it works
    inv(pg_repo, "teardown", "--adw-id", "busy", "--force", check=True)


def test_template1_in_use_without_a_template_fails_clearly(repo, pg_server, monkeypatch):
    # Without ADW_DB_TEMPLATE, CREATE DATABASE copies template1, and refuses the same way while
    # anyone is connected to it: Grove then wrote "template database None" and its hint crashed
    # (AttributeError: 'NoneType' object has no attribute 'replace').
    monkeypatch.setenv("ADW_DB_URL", pg_server.url())
    with psycopg.connect(pg_server.url("template1"), application_name="template1-user"):
        out = inv(repo, "setup", "--adw-id", "busy1", "--no-install", env={"ADW_DB_BUSY_TIMEOUT": "0.5"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "cannot clone template database 'template1': it is in use" in out.stderr
    assert "template1-user" in out.stderr and "pg_terminate_backend" in out.stderr
    assert journal(repo) == {}


def test_teardown_with_the_server_down_changes_nothing_and_keep_db_gets_through(repo, monkeypatch):
    server = pg_fixture.start_server()  # a server of its own, to stop halfway
    try:
        pg_fixture.make_template(server, "tpl")
        monkeypatch.setenv("ADW_DB_URL", server.url())
        monkeypatch.setenv("ADW_DB_TEMPLATE", "tpl")
        inv(repo, "setup", "--adw-id", "off", "--no-install", check=True)
    finally:
        server.stop()
    before = snapshot(repo)
    out = inv(repo, "teardown", "--adw-id", "off", "--force")
    assert out.returncode == 1 and "cannot connect" in out.stderr and "--keep-db" in out.stderr
    assert snapshot(repo) == before
    done = inv_json(repo, "teardown", "--adw-id", "off", "--force", "--keep-db")
    assert [d["action"] for d in done["databases"]] == ["kept"]


def test_a_database_on_another_server_is_kept(pg_repo, pg_server, template_db, monkeypatch):
    inv(pg_repo, "setup", "--adw-id", "moved", "--no-install", check=True)
    monkeypatch.setenv("ADW_DB_URL", f"postgresql://127.0.0.1:{_closed_port()}/postgres")
    done = inv_json(pg_repo, "teardown", "--adw-id", "moved", "--force")
    assert [d["action"] for d in done["databases"]] == ["kept"] and "recorded on" in done["databases"][0]["note"]
    assert pgdb.exists(pg_server.url(), pgdb.agent_db_name(template_db, "moved"))
    pgdb.drop(pg_server.url(), pgdb.agent_db_name(template_db, "moved"))


def test_passwords_are_never_printed_stored_or_logged(repo, pg_server, password_role, template_db, monkeypatch):
    pg_server.psql(f"ALTER DATABASE {template_db} OWNER TO {password_role}")
    monkeypatch.setenv("ADW_DB_URL", pg_server.role_url(password_role, SECRET))
    monkeypatch.setenv("ADW_DB_TEMPLATE", template_db)
    outputs = []
    for args in (["setup", "--adw-id", "pw", "--no-install", "--json"], ["status", "--adw-id", "pw"], ["list"],
                 ["doctor", "--json"], ["db.reset", "--adw-id", "pw", "--json"]):
        out = inv(repo, *args, check=True)
        outputs.append(out.stdout + out.stderr)
    # A command that prints the URL and fails: its log is the agent's, its tail in the state is scrubbed.
    out = inv(repo, "exec", "--adw-id", "pw", "--json", "--", "sh", "-c", 'echo "connecting to $DATABASE_URL"; exit 3')
    assert out.returncode == 1
    outputs.append(out.stdout + out.stderr)
    url = dotenv(repo / "trees/pw/.ports.env")["DATABASE_URL"]
    assert SECRET in url and query(url, "SELECT current_user")[0][0] == password_role  # the app gets it
    assert (os.stat(repo / "trees/pw/.ports.env").st_mode & 0o777) == 0o600
    out = inv(repo, "teardown", "--adw-id", "pw", "--force", "--json", check=True)
    outputs.append(out.stdout + out.stderr)
    stored = [p.read_text() for p in (repo / "agents").rglob("*.json")]
    for text in outputs + stored:
        assert SECRET not in text
    assert any(f"{password_role}:***@" in text for text in outputs)


def test_missing_template_exits_2_before_anything_changes(repo, pg_server):
    before = snapshot(repo)
    out = inv(repo, "setup", "--adw-id", "nt", "--no-install",
              env={"ADW_DB_URL": pg_server.url(), "ADW_DB_TEMPLATE": "no_such_template"})
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert snapshot(repo) == before


def test_psycopg_is_not_imported_without_adw_db_url(repo):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from grove.ops import chain; from grove.core import config\n"
            "from grove.core.report import Reporter\n"
            "s = config.load({'repo': sys.argv[2]})\n"
            "chain.setup(s, chain.Request('lazy', install=False), Reporter(quiet=True))\n"
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(LIB), str(repo)], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_database_someone_made_after_a_killed_create_is_never_adopted_or_dropped(pg_repo, pg_server, template_db):
    """Second review: a record without an OID (killed before CREATE) proved nothing about the name."""
    out = inv(pg_repo, "setup", "--adw-id", "d3", "--no-install", env={"GROVE_FAULT": "db:after:record"})
    assert out.returncode == -signal.SIGKILL
    name = pgdb.agent_db_name(template_db, "d3")
    pg_server.psql(f'CREATE DATABASE "{name}"')  # the user's own, same name
    again = inv(pg_repo, "setup", "--adw-id", "d3", "--no-install")
    assert again.returncode == 1 and "did not create" in again.stderr
    inv(pg_repo, "teardown", "--adw-id", "d3", "--force", check=True)
    assert pgdb.exists(pg_server.url(), name), "the user's database survives"
    pgdb.drop(pg_server.url(), name)


def test_merge_validates_with_its_own_database_when_postgres_is_configured(pg_repo, pg_server, template_db):
    """Second review: the integration worktree has no state, and the db step insisted on one."""
    inv(pg_repo, "setup", "--adw-id", "mv", "--no-install", check=True)
    wt = pg_repo / "trees/mv"
    (wt / "feature.txt").write_text("f\n")
    git(wt, "add", "feature.txt")
    git(wt, "commit", "-qm", "feature")
    inv(pg_repo, "status", "--adw-id", "mv", "--set", "completed", check=True)
    out = inv(pg_repo, "merge", "--adw-id", "mv", "--validate", 'test -n "$DATABASE_URL"', "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["results"][0]["outcome"] == "merged"
    assert inv(pg_repo, "doctor").returncode == 0
