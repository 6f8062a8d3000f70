"""PostgreSQL primitives for a database per agent, cloned from a template (issue 14).

``ADW_DB_URL`` is the admin URL of a server, ``ADW_DB_TEMPLATE`` the seeded database to clone with
``CREATE DATABASE <agent> TEMPLATE <template>``, ``ADW_DB_NAME`` an optional name (default
``<template>_<adw_id>``), and the agent's URL goes into env files as ``ADW_DB_URL_VAR``
(``DATABASE_URL``).

Rules this module keeps:

* psycopg 3 is an optional extra, imported only by the functions that talk to a server, so Grove
  without ``ADW_DB_URL`` never imports it (:func:`_driver`).
* A malformed URL is a ``GroveError`` with code 2 before any connection is made
  (:func:`parse_admin_url`); an unreachable server is code 1 with a hint.
* Passwords never appear in a message: every message that mentions a URL uses :func:`redact`, and
  every message that comes from libpq or the server goes through :func:`_scrub` (libpq's own parse
  errors quote the URI, password included).
* Names are quoted with ``psycopg.sql.Identifier``; no SQL is built by string formatting and no
  shell is used.
* Ownership is not decided here: lib/grove/resources/agentdb.py (the db step, teardown, doctor) checks
  Grove's ownership journal before it calls :func:`create_from_template` or :func:`drop`.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from .errors import GroveError, bad_input

NAME_MAX_BYTES = 63  # NAMEDATALEN - 1: Postgres silently truncates longer names, so two would collide
CONNECT_TIMEOUT = 5  # seconds, when the URL sets no connect_timeout of its own
BUSY_TIMEOUT = 5.0  # seconds to wait for the template's other sessions to go away
_POLL = 0.2  # seconds between looks at pg_stat_activity while the template is busy
_SCHEMES = ("postgresql://", "postgres://")
_HASH_LEN = 8  # hex digits of sha256 added to a name that had to be shortened or changed
_URL_HINT = "write it as postgresql://user:password@host:5432/postgres or postgresql:///postgres?host=/run/postgresql"


# --------------------------------------------------------------------------------------------
# URLs: validation, redaction, the agent's URL. No network and no driver needed except for
# libpq's own parser (PQconninfoParse, offline), so what we accept is exactly what libpq accepts.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdminUrl:
    """A validated admin URL. ``str()`` and ``repr()`` never show the password."""

    url: str = field(repr=False)  # as given: only ever handed to the driver
    params: dict[str, str] = field(repr=False)  # libpq's reading of it (password included)

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"AdminUrl({redact(self.url)!r})"

    @property
    def secrets(self) -> list[str]:
        """Strings to scrub from any message: the password as decoded and as written."""
        return _secret_candidates(self.url) + ([self.params["password"]] if self.params.get("password") else [])


@dataclass(frozen=True)
class _UriParts:
    """A URI split the way libpq splits it (not urllib's way: libpq has no fragment, and a
    password may hold '?', '#' or ':' unescaped)."""

    scheme: str  # "postgresql://", any other "xyz://" (for redaction), or "" when there is none
    userinfo: str | None  # "user" or "user:password", as written
    hosts: str  # "host:port,host2" or "[::1]:5432" or ""
    dbname: str | None  # as written (percent-encoded), None when there is no '/'
    query: str | None  # after '?', None when there is no '?'

    @property
    def ambiguous(self) -> bool:
        """An '@' after the credentials: a raw '/' or '@' in the password moved it there."""
        return "@" in self.hosts or "@" in (self.dbname or "")


_ANY_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _split_uri(url: str) -> _UriParts:
    m = _ANY_SCHEME.match(url)
    scheme = m.group() if m else ""
    rest = url[len(scheme):]
    userinfo = None
    at, slash = rest.find("@"), rest.find("/")
    if at != -1 and (slash == -1 or at < slash):  # libpq: credentials end at the first '@' before any '/'
        userinfo, rest = rest[:at], rest[at + 1:]
    hosts_match = re.match(r"[^/?]*", rest)
    assert hosts_match is not None  # a `*` pattern matches (maybe empty) at the start of any string
    hosts = hosts_match.group()
    rest = rest[len(hosts):]
    dbname = query = None
    if rest.startswith("/"):
        dbname, mark, query = rest[1:].partition("?")
        query = query if mark else None
    elif rest.startswith("?"):
        query = rest[1:]
    return _UriParts(scheme, userinfo, hosts, dbname, query)


def _join_uri(p: _UriParts) -> str:
    auth = f"{p.userinfo}@" if p.userinfo is not None else ""
    path = f"/{p.dbname}" if p.dbname is not None else ""
    query = f"?{p.query}" if p.query is not None else ""
    return f"{p.scheme}{auth}{p.hosts}{path}{query}"


def _credentials(url: str) -> tuple[str, str | None, str]:
    """(before the password, the password as written or None, after it), so that
    ``before + password + after == url`` when there is a password.

    When the URI is ambiguous, everything from the first ':' to the last '@' counts as password:
    hiding too much is fine, showing any of it is not.
    """
    parts = _split_uri(url)
    body = url[len(parts.scheme):]
    if parts.ambiguous:
        head, _, tail = body.rpartition("@")
    elif parts.userinfo is not None:
        head, tail = parts.userinfo, body[len(parts.userinfo) + 1:]
    else:
        return url, None, ""
    if ":" not in head:
        return url, None, ""
    user, _, password = head.partition(":")
    return f"{parts.scheme}{user}:", password, f"@{tail}"


_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with its password (in the userinfo or a ``password=`` parameter) replaced by ``***``.

    Safe on malformed input and on key=value strings too (see :func:`_credentials`).
    """
    if not isinstance(url, str):
        return "<not a string>"
    before, password, after = _credentials(url)
    if password is not None:
        url = f"{before}***{after}"
    return _KV_PASSWORD.sub(lambda m: m.group(1) + "***", url)


def _secret_candidates(url: str) -> list[str]:
    """Strings that may be (part of) the password, for scrubbing messages from libpq.

    libpq quotes pieces of a malformed URI in its errors (``invalid percent-encoded token: "p%zz"``,
    or ``pa`` from ``u:pa/ss@h``, read as host ``u`` and port ``pa``), so the pieces count too.
    """
    found = {m.group(2).strip("'") for m in _KV_PASSWORD.finditer(url)}
    password = _credentials(url)[1]
    if password:
        found.add(password)
    for secret in list(found):
        found.add(unquote(secret))
        found.update(piece for piece in re.split(r"[/?#@:&=,\[\]]", secret) if len(piece) >= 3)
    return [s for s in found if len(s) >= 2]


def _scrub(message: str, secrets: list[str]) -> str:
    """``message`` with every secret replaced by ``***``, longest first."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def scrub(message: str, admin: AdminUrl) -> str:
    """``message`` (e.g. a reset script's output) with the admin URL's password hidden."""
    return _scrub(message, admin.secrets)


def _driver():
    """Import psycopg on first use; a missing extra is a configuration error (code 2)."""
    from .hints import install_extra  # issue 21: the hint fits how Grove was installed

    try:
        import psycopg
        import psycopg.sql  # the submodule is used by every statement here
    except ImportError:
        raise bad_input("ADW_DB_URL is set but the PostgreSQL driver is not installed",
                        "install Grove's postgres extra: " + install_extra("postgres", "psycopg[binary]")) from None
    return psycopg


def parse_admin_url(url: str) -> AdminUrl:
    """Validate ``ADW_DB_URL`` offline; any problem is code 2 and nothing has been touched."""
    if not isinstance(url, str) or not url.strip():
        raise bad_input("ADW_DB_URL is empty", _URL_HINT)
    url = url.strip()
    safe = redact(url)
    if _split_uri(url).scheme not in _SCHEMES:
        raise bad_input(f"ADW_DB_URL is not a postgresql:// URI: {safe}",
                        f"Grove writes the agent's DATABASE_URL from it, so it must be a URL; {_URL_HINT}")
    psycopg = _driver()
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as e:
        detail = _scrub(str(e).strip().splitlines()[0], _secret_candidates(url))
        raise bad_input(f"ADW_DB_URL is malformed: {detail}", _URL_HINT) from None
    secrets = _secret_candidates(url) + ([params["password"]] if params.get("password") else [])
    for problem in _param_problems(params):
        raise bad_input(f"ADW_DB_URL is malformed: {_scrub(problem, secrets)} (in {safe})", _URL_HINT)
    return AdminUrl(url, {k: str(v) for k, v in params.items()})


# Values libpq checks only when connecting (connectOptions2), checked here so that a typo is
# code 2 up front. Keys missing here are left to libpq.
_CHOICES = {
    "sslmode": {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"},
    "gssencmode": {"disable", "prefer", "require"},
    "channel_binding": {"disable", "prefer", "require"},
    "target_session_attrs": {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"},
    "load_balance_hosts": {"disable", "random"},
    "sslnegotiation": {"postgres", "direct"},
}


def _param_problems(params: dict[str, Any]):
    """Checks libpq's parser leaves to connect time; these fail before any network I/O anyway."""
    ports = str(params.get("port") or "").split(",")
    for port in ports:
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            yield f"port {port!r} is not a number from 1 to 65535"
    hosts = str(params.get("host") or "").split(",")
    if len(ports) > 1 and len(ports) != len(hosts):
        yield f"{len(ports)} ports for {len(hosts)} hosts"
    timeout = str(params.get("connect_timeout") or "")
    if timeout and not timeout.lstrip("-").isdigit():
        yield f"connect_timeout {timeout!r} is not a whole number of seconds"
    for host in hosts:
        # A socket dir must be absolute: libpq takes "tmp/sock" for a host name and fails in DNS.
        if "/" in host and not host.startswith("/"):
            yield f"host {host!r} looks like a relative socket directory; use an absolute path"
    for key, allowed in _CHOICES.items():
        if params.get(key) and params[key] not in allowed:
            yield f"{key}={params[key]!r} is not one of {', '.join(sorted(allowed))}"


def agent_url(admin: AdminUrl | str, dbname: str) -> str:
    """The admin URL with its database replaced by ``dbname`` (same server, user and options).

    This is what goes into ``.ports.env`` and env files as DATABASE_URL, so it keeps the password;
    print only ``redact(agent_url(...))``. A ``dbname=`` query parameter would override the path in
    libpq, so it is dropped.
    """
    url = admin.url if isinstance(admin, AdminUrl) else parse_admin_url(admin).url
    parts = _split_uri(url)
    query = None
    if parts.query is not None:
        kept = [item for item in parts.query.split("&") if unquote(item.partition("=")[0]) != "dbname"]
        query = "&".join(kept) or None
    return _join_uri(_UriParts(parts.scheme, parts.userinfo, parts.hosts, quote(dbname, safe=""), query))


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^a-z0-9_]")


def agent_db_name(template: str | None, adw_id: str, override: str | None = None) -> str:
    """The agent's database name: ``override`` (``ADW_DB_NAME``) or ``<template>_<adw_id>``.

    ``override`` may hold ``{adw_id}`` and ``{template}`` so one setting serves every agent (a fixed
    name would be shared by all of them). Without a template the default prefix is ``grove``.

    The result is lower-case ``[a-z0-9_]`` (safe unquoted in psql, in URLs and in shell scripts)
    and at most 63 bytes. Because lower-casing, replacing characters and truncating can map two
    inputs to one name, any name that had to change gets ``_<8 hex of sha256(input)>``: distinct
    inputs keep distinct names, and the same input always gives the same name (re-runs find it).
    """
    prefix = template or "grove"
    raw = (override.replace("{adw_id}", adw_id).replace("{template}", prefix) if override
           else f"{prefix}_{adw_id}")
    name = _UNSAFE.sub("_", raw.lower())
    if not name.strip("_"):
        raise bad_input(f"database name {raw!r} has no usable characters", "set ADW_DB_NAME to letters, digits and '_'")
    if name == raw and len(name) <= NAME_MAX_BYTES:
        return name
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:_HASH_LEN]
    return f"{name[:NAME_MAX_BYTES - _HASH_LEN - 1].rstrip('_')}_{digest}"


# --------------------------------------------------------------------------------------------
# Server operations. Every connection is autocommit (CREATE/DROP DATABASE cannot run in a
# transaction block), has a connect timeout, and goes to the admin URL's own database.
# --------------------------------------------------------------------------------------------

def _as_admin(admin: AdminUrl | str) -> AdminUrl:
    return admin if isinstance(admin, AdminUrl) else parse_admin_url(admin)


def _connect(admin: AdminUrl):
    psycopg = _driver()
    options: dict[str, Any] = {"autocommit": True}
    if not admin.params.get("connect_timeout"):
        options["connect_timeout"] = CONNECT_TIMEOUT
    try:
        return psycopg.connect(admin.url, **options)
    except psycopg.Error as e:
        detail = _scrub(" ".join(str(e).split()), admin.secrets).removeprefix("connection is bad: ")
        if detail.startswith(("invalid ", "could not match")):
            # libpq rejected an option value (e.g. sslmode=bogus) before touching the network.
            raise bad_input(f"ADW_DB_URL is malformed: {detail}", _URL_HINT) from None
        raise GroveError(f"cannot connect to PostgreSQL at {admin}: {detail}", hint=_connect_hint(detail, admin)) from None


def _connect_hint(detail: str, admin: AdminUrl) -> str:
    if "password" in detail or "authentication" in detail:
        return "check the user and password in ADW_DB_URL (or ~/.pgpass)"
    if "does not exist" in detail:
        return "ADW_DB_URL must name an existing maintenance database, e.g. .../postgres"
    return (f"start the server or fix host/port in ADW_DB_URL; test it with: psql '{admin}' -c 'select 1' "
            "(or unset ADW_DB_URL to skip the database step)")


def _server_error(e: Exception, admin: AdminUrl, what: str) -> GroveError:
    detail = _scrub(" ".join(str(e).split()), admin.secrets)
    return GroveError(f"{what} failed on {admin}: {detail}")


def _ident(name: str):
    return _driver().sql.Identifier(name)


def _check_not_current(conn, *names: str) -> None:
    """The admin connection must not sit in the template (every concurrent clone would then see
    another session in it) or in the agent's database (it could not be dropped)."""
    current = conn.info.dbname
    if current in names:
        raise bad_input(f"ADW_DB_URL connects to database {current!r}, which Grove is about to clone or drop",
                        "point ADW_DB_URL at a maintenance database such as .../postgres")


def preflight(admin: AdminUrl | str, template: str | None) -> None:
    """Before anything changes: the server answers, the template exists, the URL is not inside it.

    Unreachable is code 1 (with a hint); a missing template or an admin URL pointing at it, code 2.
    """
    admin = _as_admin(admin)
    with _connect(admin) as conn:
        if template:
            _check_not_current(conn, template)
            if not _exists(conn, template):
                raise bad_input(f"template database {template!r} does not exist on {admin}",
                                "set ADW_DB_TEMPLATE to an existing database (see: psql -l)")


def exists(admin: AdminUrl | str, name: str) -> bool:
    admin = _as_admin(admin)
    with _connect(admin) as conn:
        return _exists(conn, name)


def _exists(conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def database_oid(admin: AdminUrl | str, name: str) -> int | None:
    """The database's OID, or None when there is none of that name (see :meth:`Session.oid`)."""
    with session(admin) as s:
        return s.oid(name)


def database_mark(admin: AdminUrl | str, name: str) -> str | None:
    """The label :meth:`Session.mark` put on the database, or None."""
    with session(admin) as s:
        return s.mark_of(name)


def server_key(admin: AdminUrl) -> str:
    """Which server a URL reaches, as ``host:port`` from libpq's reading of it (user and database
    left out: database names are per server). Recorded with each database Grove creates, so that
    pointing ADW_DB_URL at another server never makes a same-named database there look like Grove's."""
    host = admin.params.get("host") or admin.params.get("hostaddr") or "(default)"
    return f"{host}:{admin.params.get('port') or '5432'}"


def list_databases(admin: AdminUrl | str, prefix: str = "") -> list[str]:
    """Database names starting with ``prefix`` (literally: '_' and '%' are not wildcards here)."""
    admin = _as_admin(admin)
    with _connect(admin) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE left(datname, length(%s)) = %s ORDER BY datname",
                            (prefix, prefix)).fetchall()
    return [r[0] for r in rows]


def _sessions_on(conn, dbname: str) -> list[tuple]:
    """Other sessions in ``dbname`` that block a clone. Autovacuum workers are left out: Postgres
    cancels those itself. datname and pid are visible to every role, so this works unprivileged."""
    return conn.execute(
        "SELECT pid, usename, application_name, client_addr::text FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()"
        " AND backend_type IS DISTINCT FROM 'autovacuum worker' ORDER BY pid",
        (dbname,)).fetchall()


def _busy_message(template: str, sessions: list[tuple], waited: float, server_detail: str = "") -> str:
    shown = ", ".join(f"pid {pid} ({user or '?'}{', ' + app if app else ''}{', ' + addr if addr else ''})"
                      for pid, user, app, addr in sessions[:5])
    more = f" and {len(sessions) - 5} more" if len(sessions) > 5 else ""
    who = f"{len(sessions)} open session(s): {shown}{more}" if sessions else (server_detail or "other sessions")
    return (f"cannot clone template database {template!r}: it is in use ({who}); still busy after {waited:.1f}s. "
            "Postgres copies a template only while nobody is connected to it")


def _busy_hint(template: str) -> str:
    literal = "'" + template.replace("'", "''") + "'"
    return (f"close the sessions connected to {template!r} (psql, an IDE, a running app) and re-run; "
            f"as a superuser: SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {literal}")


FILE_COPY_MIN_BYTES = 32 * 2**20  # measured: below ~32 MiB WAL_LOG is faster, above it FILE_COPY
_STRATEGIES = ("auto", "default", "WAL_LOG", "FILE_COPY")


@dataclass(frozen=True)
class Clone:
    """What :func:`create_from_template` did."""

    seconds: float  # from the first look at the template to the end of CREATE DATABASE
    strategy: str  # what CREATE DATABASE was told: WAL_LOG, FILE_COPY, or "default"


def _choose_strategy(conn, template: str | None, strategy: str) -> str:
    """``auto``: FILE_COPY for a template of 32 MiB or more on PG 15+, else the server's default.

    Since PG 15 the default (WAL_LOG) writes the whole template through the WAL: cheap for small
    templates, but at 50 MB it is about 2x slower than FILE_COPY (a file copy plus two checkpoints),
    and too slow for the issue's "5x faster than loading a dump". Before PG 15 there is no STRATEGY
    clause and every clone is a file copy.
    """
    if conn.info.server_version < 150000:
        return "default"
    if strategy != "auto":
        return strategy
    if not template:
        return "default"
    try:
        size = conn.execute("SELECT pg_database_size(%s)", (template,)).fetchone()[0]
    except _driver().Error:  # no CONNECT right on the template: let CREATE DATABASE say what is wrong
        return "default"
    return "FILE_COPY" if size >= FILE_COPY_MIN_BYTES else "default"


def _create_statement(name: str, template: str | None, strategy: str):
    sql = _driver().sql
    statement = sql.SQL("CREATE DATABASE {}").format(_ident(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(_ident(template))
    if strategy in ("WAL_LOG", "FILE_COPY"):
        statement += sql.SQL(" STRATEGY " + strategy)  # one of two fixed words, never user text
    return statement


def _wait_until_free(conn, template: str | None, start: float, busy_timeout: float) -> None:
    """Return once nobody else is connected to ``template``; GroveError once busy_timeout has passed."""
    if not template:
        return
    while True:
        sessions = _sessions_on(conn, template)
        if not sessions:
            return
        waited = time.monotonic() - start
        if waited >= busy_timeout:
            raise GroveError(_busy_message(template, sessions, waited), hint=_busy_hint(template))
        time.sleep(min(_POLL, max(busy_timeout - waited, 0.01)))


def create_from_template(admin: AdminUrl | str, template: str | None, name: str, *,
                         busy_timeout: float = BUSY_TIMEOUT, strategy: str = "auto") -> Clone:
    """``CREATE DATABASE name TEMPLATE template`` on a connection of its own (see :meth:`Session.create`)."""
    with session(admin) as s:
        return s.create(template, name, busy_timeout=busy_timeout, strategy=strategy)


class DuplicateDatabase(GroveError):
    """CREATE DATABASE found the name taken: whoever made it, this call did not."""


def _create_error(e: Exception, admin: AdminUrl, template: str | None, name: str) -> GroveError:
    """One line on what went wrong and what to do, for the errors CREATE DATABASE is known for."""
    errors = _driver().errors
    if isinstance(e, errors.DuplicateDatabase):
        return DuplicateDatabase(f"database {name!r} already exists on {admin}",
                                 hint="Grove did not create it; drop it yourself or choose another ADW_DB_NAME")
    if isinstance(e, errors.InvalidCatalogName):
        return bad_input(f"template database {template!r} does not exist on {admin}",
                         "set ADW_DB_TEMPLATE to an existing database (see: psql -l)")
    if isinstance(e, errors.InsufficientPrivilege):
        return GroveError(f"not allowed to create database {name!r} from {template or 'template1'!r}: "
                          f"{_scrub(str(e).strip(), admin.secrets)}",
                          hint="the ADW_DB_URL role needs CREATEDB, and the template must be owned by it "
                               f"or marked: ALTER DATABASE {template} IS_TEMPLATE true")
    return _server_error(e, admin, f"CREATE DATABASE {name}")


def drop(admin: AdminUrl | str, name: str) -> bool:
    """Drop ``name`` after ending its sessions, on a connection of its own (see :meth:`Session.drop`)."""
    with session(admin) as s:
        return s.drop(name)


def _drop_pre13(conn, name: str, attempts: int = 10) -> None:
    psycopg = _driver()
    sql = psycopg.sql
    # Stop new sessions first, or a reconnecting app would win the race against the DROP.
    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_ident(name)))
    for attempt in range(attempts):
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(_ident(name)))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


class Session:
    """One connection for several operations: the db step asks for the OID, creates the database
    and asks again, and each new connection costs about as much as psql's own start-up."""

    def __init__(self, admin: AdminUrl):
        self.admin = admin
        self.conn: Any | None = None  # psycopg's connection (the driver is imported lazily: untyped)

    def __enter__(self) -> "Session":
        self.conn = _connect(self.admin)
        return self

    def __exit__(self, *exc) -> None:
        self._connection().close()

    def _connection(self) -> Any:
        """The open connection: a Session is used inside ``with pgdb.session(admin) as s``."""
        if self.conn is None:
            raise GroveError("pgdb.Session used outside `with pgdb.session(...)`: it has no connection",
                             hint="a bug in Grove: please report it with the command you ran")
        return self.conn

    def oid(self, name: str) -> int | None:
        """The database's OID, or None when there is none of that name.

        A name proves nothing (DESIGN.md): the OID is what Grove records after creating a database,
        so one of the same name made later by someone else (or on another server) is told apart.
        """
        row = self._connection().execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return int(row[0]) if row else None

    def mark(self, name: str, token: str) -> None:
        """Label the database Grove just created with the token it recorded before creating it."""
        from psycopg import sql

        statement = sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(token))
        self._connection().execute(statement)

    def mark_of(self, name: str) -> str | None:
        row = self._connection().execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row[0] if row else None

    def create(self, template: str | None, name: str, *, busy_timeout: float = BUSY_TIMEOUT,
               strategy: str = "auto") -> Clone:
        """``CREATE DATABASE name TEMPLATE template``.

        ``template=None`` creates an empty database (from template1). Postgres refuses to copy a
        template while anyone is connected to it, and itself waits up to 5 s inside CREATE DATABASE
        before saying so. We look at pg_stat_activity first and poll until the template is free or
        ``busy_timeout`` has passed, so the wait is bounded by busy_timeout (+5 s if a session
        arrives between our look and the CREATE, after which we look again). Concurrent clones of
        one template do not block each other: the cloning sessions sit in the admin database, not
        in the template.

        ``strategy``: ``auto`` (see :func:`_choose_strategy`), ``default`` (say nothing),
        ``WAL_LOG`` or ``FILE_COPY``.
        """
        if strategy not in _STRATEGIES:
            raise bad_input(f"unknown CREATE DATABASE strategy {strategy!r}", f"use one of {', '.join(_STRATEGIES)}")
        admin, conn, psycopg = self.admin, self._connection(), _driver()
        _check_not_current(conn, *(n for n in (template, name) if n))
        chosen = _choose_strategy(conn, template, strategy)
        statement = _create_statement(name, template, chosen)
        start = time.monotonic()
        while True:
            _wait_until_free(conn, template, start, busy_timeout)
            try:
                conn.execute(statement)
                return Clone(time.monotonic() - start, chosen)
            except psycopg.errors.ObjectInUse as e:  # a session arrived after our look
                if time.monotonic() - start >= busy_timeout:
                    detail = _scrub(" ".join(str(e).split()), admin.secrets)
                    source = template or "template1"  # what CREATE DATABASE copies when told no template
                    sessions = _sessions_on(conn, source)
                    raise GroveError(_busy_message(source, sessions, time.monotonic() - start, detail),
                                     hint=_busy_hint(source)) from None
            except psycopg.Error as e:
                raise _create_error(e, admin, template, name) from None

    def drop(self, name: str) -> bool:
        """Drop ``name`` after ending its sessions; False when it did not exist.

        PG 13+ does both in one statement (``WITH (FORCE)``); older servers get
        ``pg_terminate_backend`` and a short retry. Callers must only pass names Grove recorded as
        its own (lib/grove/resources/agentdb.py checks the ownership journal first).
        """
        admin, conn, psycopg = self.admin, self._connection(), _driver()
        _check_not_current(conn, name)
        if not _exists(conn, name):
            return False
        try:
            if conn.info.server_version >= 130000:
                conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))
            else:
                _drop_pre13(conn, name)
        except psycopg.errors.InsufficientPrivilege as e:
            raise GroveError(f"not allowed to drop database {name!r}: {_scrub(str(e).strip(), admin.secrets)}",
                             hint="the ADW_DB_URL role must own the database and may need pg_signal_backend "
                                  "to end other roles' sessions") from None
        except psycopg.Error as e:
            raise _server_error(e, admin, f"DROP DATABASE {name}") from None
        return True


def session(admin: AdminUrl | str) -> Session:
    """``with pgdb.session(admin) as s: s.oid(...); s.create(...)``: one connection for all."""
    return Session(_as_admin(admin))


# --------------------------------------------------------------------------------------------
# Dumps and activity (issue 20, item 3): a database is dumped before anything drops it, and
# writes to it count as its agent's activity.
# --------------------------------------------------------------------------------------------

def tool_target(admin: AdminUrl | str, dbname: str) -> tuple[str, dict[str, str]]:
    """(URL of ``dbname`` without its password, extra environment) for pg_dump/pg_restore.

    The password goes to the child as PGPASSWORD, never on its command line (``ps`` shows that).
    """
    admin = _as_admin(admin)
    url = agent_url(admin, dbname)
    before, password, after = _credentials(url)
    if password is not None:
        url = before[:-1] + after  # "scheme://user:" + password + "@host..." -> "scheme://user@host..."
    url = re.sub(r"(?i)([?&])password=[^&]*&?", r"\1", url).rstrip("?&")
    env = {"PGPASSWORD": admin.params["password"]} if admin.params.get("password") else {}
    return url, env


def server_major(admin: AdminUrl | str) -> int:
    """The server's major version (18 for 18.6): a pg_dump older than the server refuses to dump it."""
    with _connect(_as_admin(admin)) as conn:
        return int(conn.info.server_version) // 10000


def write_count(admin: AdminUrl | str, name: str) -> int | None:
    """Rows inserted, updated and deleted in ``name`` since its statistics began; None when it is gone.

    Cumulative, so any change between two looks means someone wrote to it (a stats reset lowers it:
    a change too, which errs towards "active")."""
    with _connect(_as_admin(admin)) as conn:
        row = conn.execute("SELECT coalesce(tup_inserted, 0) + coalesce(tup_updated, 0) + coalesce(tup_deleted, 0)"
                           " FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def untouchable(admin: AdminUrl | str, name: str) -> list[str]:
    """Tables and sequences in ``name`` that the URL's role can neither read nor change, as exact
    pg_dump patterns (``"schema"."table"``).

    A role that clones a template owned by someone else owns the database but not those tables: its
    pg_dump fails on them ("permission denied"), yet nothing in them can be its agent's work (the
    agent connects as the same role), and their rows are the template's. Anything the role can
    write to it can also be asked to read; if it cannot, the dump fails and nothing is dropped.
    """
    url = agent_url(_as_admin(admin), name)
    with _connect(parse_admin_url(url)) as conn:
        rows = conn.execute(
            "SELECT '\"' || replace(n.nspname, '\"', '\"\"') || '\".\"' || replace(c.relname, '\"', '\"\"') || '\"'"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
            " AND ((c.relkind IN ('r', 'p', 'm', 'f')"
            "       AND NOT has_table_privilege(c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE'))"
            "   OR (c.relkind = 'S' AND NOT has_sequence_privilege(c.oid, 'SELECT,USAGE,UPDATE')))"
            " ORDER BY 1").fetchall()
    return [r[0] for r in rows]
