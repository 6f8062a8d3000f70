"""An agent's own PostgreSQL database: the db step, teardown and doctor (issue 14).

With ``ADW_DB_URL`` set, each agent gets the database ``ADW_DB_NAME`` (default
``<template>_<adw_id>``), cloned from ``ADW_DB_TEMPLATE`` (an empty one from template1 when no
template is set). Its URL goes into .ports.env and the merged env files as ``ADW_DB_URL_VAR``
(DATABASE_URL), and the reset script then runs with it. lib/grove/core/pgdb.py talks to the server;
this module decides what may be created, kept and dropped.

Ownership (DESIGN.md safety model): a database is written into the ownership journal
(agents/.grove/owned.json, kind "database") before CREATE DATABASE, with the server it is on and,
once it exists, its OID. Grove drops a database only when the journal names it for this agent and
this server and the OID is the recorded one; the entry is forgotten just before the DROP, so a crash
in between leaves an unowned database (kept), never a dropped one that was not Grove's.

Passwords never leave the process: the state, JSON, messages and the journal hold redacted URLs.

Nothing drops a database before it is dumped (issue 20, item 3): every DROP goes through
:func:`_dump_and_drop`, which writes ``pg_dump -Fc`` into the agent's archive first
(lib/grove/safety/dbdump.py) and refuses (exit 1, database kept) when it cannot. gc and doctor never
drop the database of an agent that can still be resumed (:func:`resumable`).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, NamedTuple, TypeGuard

from ..safety import dbdump, owned
from ..core import git, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.faults import fault

if TYPE_CHECKING:
    from ..core import pgdb

KIND = "database"


def _pg():
    """pgdb, loaded only when a database is in play: a setup without ADW_DB_URL never pays for it."""
    from ..core import pgdb

    return pgdb
NAME_HINT = "put {adw_id} in ADW_DB_NAME (e.g. myapp_{adw_id}) so that every agent gets its own"


def configured(settings: Settings) -> bool:
    return bool(settings.db_url)


def _admin(settings: Settings) -> pgdb.AdminUrl:
    return _pg().parse_admin_url(settings.db_url)


def name_for(settings: Settings, adw_id: str) -> str:
    return _pg().agent_db_name(settings.db_template or None, adw_id, settings.db_name or None)


def env_values(settings: Settings, adw_id: str) -> dict[str, str]:
    """``{ADW_DB_URL_VAR: the agent's URL}``, or nothing without ADW_DB_URL.

    Computed from the name alone, without the server: the file steps run before the db step and
    already write it. The value holds the password (the app needs it); it is never printed.
    """
    if not configured(settings):
        return {}
    return {settings.db_url_var: _pg().agent_url(_admin(settings), name_for(settings, adw_id))}


def scrub(settings: Settings, text: str) -> str:
    """``text`` with the database password hidden (a reset script may echo DATABASE_URL)."""
    return _pg().scrub(text, _admin(settings)) if configured(settings) else text


def _mine(entry: dict | None, adw_id: str, server: str) -> TypeGuard[dict]:
    return entry is not None and entry.get("adw_id") == adw_id and entry.get("server") == server


def _record(settings: Settings, name: str, adw_id: str, server: str, oid: int | None, token: str | None = None) -> None:
    owned.record(settings, KIND, name, adw_id=adw_id, server=server, template=settings.db_template or None, oid=oid,
                 token=token)


def _proven(entry: dict, oid: int | None, mark: Callable[[], str | None]) -> bool:
    """The database now called ``name`` is the one this journal entry records.

    By OID once recorded; before that (a run killed between CREATE and recording the OID) by the
    token Grove wrote into the journal before CREATE and onto the database right after it. A name
    alone proves nothing: someone may have created a database of that name since (second review).
    """
    if oid is None or entry is None:
        return False
    if entry.get("oid") is not None:
        return entry["oid"] == oid
    return bool(entry.get("token")) and mark() == f"grove:{entry['token']}"


def check(settings: Settings, adw_id: str, connect: bool = True) -> None:
    """For the chain's validate step, before anything changes: the name is usable, no other agent's
    record holds it (exit 2), and (``connect``) the server answers and has the template, so a
    server that is down fails now (exit 1) rather than after the worktree and the install."""
    if not configured(settings):
        return
    admin = _admin(settings)
    name = name_for(settings, adw_id)
    entry = owned.owner(settings, KIND, name)
    if entry and entry.get("adw_id") != adw_id and entry.get("server") == _pg().server_key(admin):
        raise bad_input(f"database {name} is Grove's database for agent {entry.get('adw_id')}; "
                        "ADW_DB_NAME gives two agents the same name", NAME_HINT)
    if connect:
        _pg().preflight(admin, settings.db_template or None)


class Outcome(NamedTuple):
    """What the db step did with the agent's database; ``url`` is redacted."""

    name: str
    action: str  # created | kept | recreated
    url: str
    template: str | None
    seconds: float = 0.0

    def for_state(self) -> dict:
        return {"name": self.name, "url": self.url, "template": self.template}

    def line(self) -> str:
        source = f" from {self.template}" if self.template else " (empty)"
        return f"{self.action} {self.name}" + (source if self.action != "kept" else "")


def ensure(settings: Settings, adw_id: str, *, reset: bool = False, created: list[str] | None = None) -> Outcome:
    """Create the agent's database from the template, keep the one it has, or with ``reset`` recreate it.

    A database of that name that the journal does not give to this agent on this server (or whose
    OID is not the recorded one) is never reused, reset or dropped: code 1, nothing changed.
    Names this call created are appended to ``created`` (the chain drops them on rollback).
    """
    admin = _admin(settings)
    with _pg().session(admin) as server:  # one connection for the looks and the CREATE
        return _ensure(settings, server, adw_id, reset, created)


def _ensure(settings: Settings, server: pgdb.Session, adw_id: str, reset: bool, created: list[str] | None) -> Outcome:
    admin = server.admin
    name = name_for(settings, adw_id)
    key = _pg().server_key(admin)
    template = settings.db_template or None
    safe = _pg().redact(_pg().agent_url(admin, name))
    entry = owned.owner(settings, KIND, name)
    oid = server.oid(name)
    if oid is not None:
        if not _mine(entry, adw_id, key) or not _proven(entry, oid, lambda: server.mark_of(name)):
            raise GroveError(f"database {name!r} already exists on {admin} and Grove did not create it for {adw_id}",
                             hint="Grove never reuses or drops a database it did not create: drop it yourself, "
                                  "or set ADW_DB_NAME to another name (it may use {adw_id})")
        if not reset:
            if entry.get("oid") is None or entry.get("kept"):  # a killed run's, or kept by teardown --keep-db
                _record(settings, name, adw_id, key, oid)
            return Outcome(name, "kept", safe, template)
    start = time.monotonic()
    # Recorded before it exists (DESIGN.md): only a database in the journal is ever Grove's to drop.
    import secrets  # lazy, as in ids.new_id: OpenSSL's hashlib costs a millisecond per start-up

    token = secrets.token_hex(8)
    _record(settings, name, adw_id, key, None, token)
    fault("db", "after", "record")
    if oid is not None:  # --reset-db: the record stays, the same agent gets a fresh clone, its rows dumped first
        dbdump.dump_postgres(settings, adw_id, name, admin, _dump_tool(settings, admin))
        server.drop(name)
    try:
        server.create(template, name, busy_timeout=settings.db_busy_timeout)
    except GroveError as exc:
        _forget_failed(settings, admin, name, exc)
        raise
    server.mark(name, f"grove:{token}")
    fault("db", "after", "create")
    _record(settings, name, adw_id, key, server.oid(name))
    if created is not None and oid is None:
        created.append(name)
    return Outcome(name, "recreated" if oid is not None else "created", safe, template, time.monotonic() - start)


def _forget_failed(settings: Settings, admin: pgdb.AdminUrl, name: str, exc: GroveError) -> None:
    """CREATE DATABASE failed: drop the record unless the database may be ours after all.

    A duplicate is someone else's (forget). Otherwise forget only once the server says the name
    is absent: a connection lost mid-CREATE may have created it, and then the record must stay.
    """
    try:
        if isinstance(exc, _pg().DuplicateDatabase) or _pg().database_oid(admin, name) is None:
            owned.forget(settings, KIND, name)
    except GroveError:
        pass  # the server is gone too: the record stays, the safe direction


def drop_created(settings: Settings, adw_id: str, name: str) -> None:
    """Roll back a database this setup run created (still recorded for this agent)."""
    admin = _admin(settings)
    entry = owned.owner(settings, KIND, name)
    if not _mine(entry, adw_id, _pg().server_key(admin)):
        return
    oid = _pg().database_oid(admin, name)
    if oid is not None and not _proven(entry, oid, lambda: _pg().database_mark(admin, name)):
        return
    if oid is None:
        owned.forget(settings, KIND, name)
    else:
        _dump_and_drop(settings, admin, name, adw_id)


def _dump_tool(settings: Settings, admin: pgdb.AdminUrl) -> str:
    """A pg_dump that can dump this server, or exit 1 (nothing dropped): asked before anything changes."""
    return dbdump.find_tool(settings, "pg_dump", _pg().server_major(admin))


def _dump_and_drop(settings: Settings, admin: pgdb.AdminUrl, name: str, adw_id: str, tool: str | None = None) -> str:
    """The one way Grove drops a database (issue 20, item 3): dumped into the agent's archive first,
    then forgotten, then dropped. A failed dump raises (exit 1) with the database and its record kept."""
    dump = dbdump.dump_postgres(settings, adw_id, name, admin, tool or _dump_tool(settings, admin))
    owned.forget(settings, KIND, name)  # just before the DROP (see the module note)
    fault("teardown", "after", "forget-db")
    _pg().drop(admin, name)
    return str(dump)


# ---------------------------------------------------------------------------------------------
# Teardown: decided before the worktree goes (an unreachable server fails while nothing has
# changed), applied after it.


def recorded(settings: Settings, adw_id: str) -> dict[str, dict]:
    """The databases the journal gives to ``adw_id``."""
    return {n: i for n, i in owned.entries(settings, KIND).items() if i.get("adw_id") == adw_id}


def plan_teardown(settings: Settings, adw_id: str, keep: bool, why: str = "--keep-db") -> list[dict]:
    """What teardown will do with each database the journal gives to ``adw_id``.

    Connects to the server (once per database) unless there is nothing to drop, so an unreachable
    server, or no pg_dump able to dump it, is exit 1 before anything changes; ``keep`` (``--keep-db``,
    or gc, ``why`` says which) skips the server altogether and marks the database kept on purpose.
    """
    mine = recorded(settings, adw_id)
    if not mine:
        return []
    if keep:
        return [{"name": n, "action": "kept", "note": why, "on_purpose": True} for n in sorted(mine)]
    if not configured(settings):
        return [{"name": n, "action": "kept", "note": "ADW_DB_URL is not set, so Grove cannot reach it"}
                for n in sorted(mine)]
    admin = _admin(settings)
    server = _pg().server_key(admin)
    plans: list[dict] = []
    for name, info in sorted(mine.items()):
        if info.get("server") != server:
            plans.append({"name": name, "action": "kept",
                          "note": f"recorded on {info.get('server')}, but ADW_DB_URL reaches {server}"})
            continue
        try:
            oid = _pg().database_oid(admin, name)
        except GroveError as exc:
            exc.hint = f"start the server, or pass --keep-db to tear down without dropping {name}"
            raise
        if oid is None:
            plans.append({"name": name, "action": "absent", "note": "already gone"})
        elif not _proven(info, oid, lambda: _pg().database_mark(admin, name)):
            plans.append({"name": name, "action": "not_owned",
                          "note": "a database of that name exists but is not the one Grove created: left alone"})
        else:
            plans.append({"name": name, "action": "drop", "note": None})
    if any(p["action"] == "drop" for p in plans):
        tool = _dump_tool(settings, admin)  # no pg_dump for this server: refused while nothing has changed
        for p in plans:
            p["tool"] = tool
    return plans


def apply_teardown(settings: Settings, adw_id: str, plans: list[dict]) -> list[dict]:
    """Carry out :func:`plan_teardown`'s plan; returns ``[{name, action, url, note, dump}]`` (url
    redacted; ``dump`` is the archived pg_dump of a dropped database)."""
    out = []
    admin = _admin(settings) if configured(settings) else None
    for plan in plans:
        name, action, dump = plan["name"], plan["action"], None
        if action == "kept" and plan.get("on_purpose"):
            entry = owned.owner(settings, KIND, name)
            if entry is not None:  # doctor does not call a database kept on purpose an orphan
                owned.record(settings, KIND, name, **{**entry, "kept": True})
        elif action in ("absent", "not_owned"):
            owned.forget(settings, KIND, name)  # the record no longer names what Grove made
        elif action == "drop":
            assert admin is not None  # plan_teardown plans a drop only with ADW_DB_URL set
            dump = _dump_and_drop(settings, admin, name, adw_id, plan.get("tool"))
            action = "dropped"
        url = _pg().redact(_pg().agent_url(admin, name)) if admin else None
        out.append({"name": name, "action": action, "url": url, "note": plan["note"], "dump": dump})
    return out


# ---------------------------------------------------------------------------------------------
# Doctor


def resumable(settings: Settings, adw_id: str) -> bool:
    """``grove setup --adw-id X`` would bring the agent back: it has a state or a worktree directory,
    or a branch Grove made for it (the journal's, or its archived state's) still exists (issue 20,
    item 3: doctor archived a lost worktree's state, "the branch stays", then dropped its database)."""
    if settings.state_path(adw_id).parent.exists() or os.path.lexists(settings.worktree_path(adw_id)):
        return True
    branches = {b for b, i in owned.entries(settings, "branch").items() if i.get("adw_id") == adw_id}
    branches |= {str(s["branch"]) for s in state.archived(settings) if s.get("adw_id") == adw_id and s.get("branch")}
    return any(b and git.branch_exists(settings.repo, b) for b in branches)


def orphans(settings: Settings, live: set[str], busy: Callable[[str], bool]) -> list[dict]:
    """Databases Grove recorded on this server whose agent is gone for good: no state, no worktree,
    and nothing to resume it from (:func:`resumable`).

    A database teardown kept on purpose (``--keep-db``) is not an orphan, nor one whose OID is not
    the recorded one (someone else's, of the same name), nor one of an agent being set up right now.
    """
    if not configured(settings):
        return []
    candidates = {n: i for n, i in owned.entries(settings, KIND).items()
                  if i.get("adw_id") not in live and not i.get("kept") and not resumable(settings, str(i.get("adw_id")))}
    if not candidates:
        return []  # no connection when there is nothing to look at
    admin = _admin(settings)
    server = _pg().server_key(admin)
    out = []
    for name, info in sorted(candidates.items()):
        if info.get("server") != server or busy(str(info.get("adw_id"))):
            continue
        oid = _pg().database_oid(admin, name)
        if oid is not None and _proven(info, oid, lambda: _pg().database_mark(admin, name)):
            out.append({"database": name, "adw_id": info.get("adw_id"),
                        "url": _pg().redact(_pg().agent_url(admin, name))})
    return out


def drop_orphan(settings: Settings, name: str, adw_id: str) -> str | None:
    """Drop an orphan :func:`orphans` found, after checking the record once more and dumping it;
    the dump's path when dropped, None when it is not (or no longer) an orphan."""
    admin = _admin(settings)
    entry = owned.owner(settings, KIND, name)
    if not _mine(entry, adw_id, _pg().server_key(admin)) or entry.get("kept") or resumable(settings, adw_id):
        return None
    oid = _pg().database_oid(admin, name)
    if oid is None or not _proven(entry, oid, lambda: _pg().database_mark(admin, name)):
        return None
    return _dump_and_drop(settings, admin, name, adw_id)


# ---------------------------------------------------------------------------------------------
# gc: writes to the database are the agent's activity (issue 20, item 3)


def last_write(settings: Settings, adw_id: str) -> float:
    """When a write to ``adw_id``'s databases was last seen (epoch seconds; 0 when never).

    Postgres keeps no write time, only counters (pg_stat_database tup_inserted/updated/deleted), so
    each look records the counter in the journal: a counter that moved since the last look (or was
    never looked at and is not zero) means a write now; an unchanged one, the time recorded then.
    """
    if not configured(settings):
        return 0.0
    admin = _admin(settings)
    key = _pg().server_key(admin)
    newest = 0.0
    for name, info in recorded(settings, adw_id).items():
        if info.get("server") != key:
            continue  # on another server: not this one's counters to read
        try:
            count = _pg().write_count(admin, name)
        except GroveError:
            # The server is down: nobody writes there now. gc keeps the database whatever it decides
            # about the worktree, so a missing signal loses nothing; gc's other signals decide.
            continue
        if count is None:
            continue
        seen = info.get("writes")
        if isinstance(seen, dict) and seen.get("count") == count:
            newest = max(newest, state.parse_time(seen.get("at")) or 0.0)
        elif count or seen:
            newest = time.time()
            owned.annotate(settings, KIND, name, writes={"count": count, "at": state.now()})
    return newest


def restore(settings: Settings, dump: str, adw_id: str | None = None) -> dict:
    """Load an archived dump back into its agent's database (`grove salvage --restore <dump>`).

    The database must exist and be Grove's for that agent (set the agent up again first); what it
    holds now is dumped too before pg_restore replaces it, so a restore loses nothing either.
    """
    row = dbdump.find(settings, dump)
    if adw_id and adw_id != row["adw_id"]:
        raise bad_input(f"{dump} is a dump of {row['adw_id']}'s database, not {adw_id}'s",
                        f"drop --adw-id or pass --adw-id {row['adw_id']}")
    if row.get("engine") == "sqlite":
        tree = settings.worktree_path(row["adw_id"])
        if not tree.is_dir():
            raise GroveError(f"agent {row['adw_id']} has no worktree to restore {row['source']} into",
                             hint=f"set it up again first (grove setup --adw-id {row['adw_id']}), then restore")
        before = dbdump.restore_sqlite(settings, row, tree)
        return {"dump": row["path"], "adw_id": row["adw_id"], "database": str(tree / row["source"]), "url": None,
                "saved_before": str(before) if before else None}
    if not configured(settings):
        raise bad_input("ADW_DB_URL is not set: Grove cannot reach a server to restore into",
                        "set ADW_DB_URL to the server the dump came from")
    admin, owner_id = _admin(settings), row["adw_id"]
    name = name_for(settings, owner_id)
    entry = owned.owner(settings, KIND, name)
    oid = _pg().database_oid(admin, name)
    if oid is None or not _mine(entry, owner_id, _pg().server_key(admin)) \
            or not _proven(entry, oid, lambda: _pg().database_mark(admin, name)):
        raise GroveError(f"agent {owner_id} has no database of Grove's to restore into ({name})",
                         hint=f"set it up again first (grove setup --adw-id {owner_id}), then restore")
    major = _pg().server_major(admin)
    before = dbdump.dump_postgres(settings, owner_id, name, admin, dbdump.find_tool(settings, "pg_dump", major))
    dbdump.restore_postgres(settings, row, admin, name, dbdump.find_tool(settings, "pg_restore", major))
    return {"dump": row["path"], "adw_id": owner_id, "database": name,
            "url": _pg().redact(_pg().agent_url(admin, name)), "saved_before": str(before)}
