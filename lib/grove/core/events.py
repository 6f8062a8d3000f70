"""The event stream ``<agents_dir>/.grove/events.jsonl``: one JSON line per lifecycle change (issue 22).

Orchestrators follow it (`grove events --follow`) instead of polling `list`. Each line is
``{"time", "event", "adw_id", "from", "to", "by": {"pid", "command"}, "details"}``; ``event`` is one of
EVENTS. Appends are crash-safe: the whole line goes out in one ``os.write`` on an ``O_APPEND`` fd,
so concurrent writers never interleave inside a line and a kill leaves at most the lines written.
At ROTATE_BYTES the file moves to ``events.jsonl.1`` (the previous ``.1`` is replaced).

Writing an event never fails the operation that emits it: the change has happened already, and a
full disk must not turn a finished teardown into an error. A lost event is said on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .config import Settings

FILE = "events.jsonl"
ROTATE_BYTES = 10 * 1024 * 1024
EVENTS = ("created", "status", "merged", "conflict", "cleaned", "torn_down", "salvaged", "archived", "adopted",
          "restored", "rolled_back")
_COMMAND_LIMIT = 300  # argv can be long (an exec's command); the stream keeps its head


def path(settings: Settings) -> Path:
    return settings.grove_path / FILE


def stamp() -> str:
    """UTC to the millisecond: events of one second stay ordered and `--since` can cut between them."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _command() -> str:
    name = os.path.basename(sys.argv[0] or "python") if sys.argv else "python"
    if name == "__main__.py":  # `python -m grove` (the MCP server's children)
        name = "grove"
    argv = [name, *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= _COMMAND_LIMIT else text[:_COMMAND_LIMIT] + "..."


def emit(settings: Settings, event: str, adw_id: str, frm: str | None = None, to: str | None = None,
         **details: object) -> None:
    """Append one event; never raises (see the module note)."""
    doc = {"time": stamp(), "event": event, "adw_id": adw_id, "from": frm, "to": to,
           "by": {"pid": os.getpid(), "command": _command()},
           "details": {k: v for k, v in details.items() if v is not None}}
    line = (json.dumps(doc, default=str, separators=(",", ":")) + "\n").encode()
    try:
        append(settings, line)
    except OSError as exc:
        sys.stderr.write(f"warning: event {event} of {adw_id} not written to {path(settings)}: {exc}\n")


def append(settings: Settings, line: bytes) -> None:
    target = path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    _rotate_if_full(settings, target, len(line))
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write per line: O_APPEND makes it land whole at the end
    finally:
        os.close(fd)


def _rotate_if_full(settings: Settings, target: Path, adding: int) -> None:
    try:
        if target.stat().st_size + adding <= ROTATE_BYTES:
            return
    except FileNotFoundError:
        return
    from . import locks

    # Under a lock, checked again: two writers that both saw a full file rotate it once. A writer
    # that opened the old file just before still appends to it, now events.jsonl.1: nothing is lost.
    with locks.locked(settings.lock_path("events"), settings.lock_timeout, "the event stream is being rotated"):
        try:
            if target.stat().st_size + adding > ROTATE_BYTES:
                os.replace(target, target.with_name(FILE + ".1"))
        except FileNotFoundError:
            pass


def status_change(settings: Settings, adw_id: str, before: str | None, s: dict) -> None:
    """The event for a state whose status went from ``before`` to ``s["status"]`` (state.update)."""
    after = s.get("status")
    if after == before:
        return
    if before is None:
        emit(settings, "created", adw_id, None, after, branch=s.get("branch"), worktree_path=s.get("worktree_path"),
             ports=s.get("ports") or None, adopted=s.get("adopted") or None)
        return
    event = after if after in ("merged", "conflict", "cleaned") else "status"
    last = (s.get("history") or [{}])[-1]
    emit(settings, event, adw_id, before, after, agent=last.get("by"),
         error=s.get("error_message") if after in ("failed", "conflict") else None,
         merged_commit=s.get("merged_commit") if after == "merged" else None,
         conflict_files=s.get("conflict_files") or None if after == "conflict" else None)


# -- reading ---------------------------------------------------------------------------------------

def parse_since(text: str) -> float:
    """``--since``: an ISO 8601 time (``2026-12-04T21:00:00Z``, a date, or with an offset) or an age
    (``90s``, ``15m``, ``2h``, ``1d``); naive times are UTC (DESIGN.md pitfalls)."""
    from .errors import bad_input

    raw = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if raw[-1:] in units and raw[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(raw[:-1]) * units[raw[-1]]
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_input(f"--since {text!r} is not a time", "give an ISO 8601 time (2026-12-04T21:00:00Z) "
                        "or an age (90s, 15m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def event_time(doc: dict) -> float:
    try:
        return datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


def matches(doc: dict, since: float | None, adw_id: str | None) -> bool:
    return (since is None or event_time(doc) >= since) and (adw_id is None or doc.get("adw_id") == adw_id)


def _parse(line: bytes) -> dict | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None  # a line cut by a full disk: skipped, the others still read
    return doc if isinstance(doc, dict) else None


def _matching(lines, adw_id: str | None, since: float | None = None) -> Iterator[dict]:
    for line in lines:
        doc = _parse(line) if line else None
        if doc is not None and matches(doc, since, adw_id):
            yield doc


def _read_file(name: Path, since: float | None, adw_id: str | None) -> list[dict]:
    try:
        data = name.read_bytes()
    except FileNotFoundError:
        return []
    return list(_matching(data.splitlines(), adw_id, since))


def read(settings: Settings, since: float | None = None, adw_id: str | None = None) -> list[dict]:
    """Every event that matches, oldest first (the rotated file, then the current one)."""
    target = path(settings)
    return _read_file(target.with_name(FILE + ".1"), since, adw_id) + _read_file(target, since, adw_id)


def follow(settings: Settings, since: float | None = None, adw_id: str | None = None,
           interval: float = 0.25, stop=lambda: False) -> Iterator[dict]:
    """Events as they are appended: with ``since`` those already there first, else only new ones.

    Polls every ``interval`` seconds (bounded: 0.05..5) until ``stop()`` is true. The replay reads
    the current file through the same handle that then waits at its end, so no line appended
    meanwhile is missed or shown twice. Follows a rotation (the file's inode changes: what was left
    in the old one is read, then the new one from its start).
    """
    interval = min(max(interval, 0.05), 5.0)
    target = path(settings)
    start_at: int | None = None  # None: the end of the file, once it is open
    if since is not None:
        yield from _read_file(target.with_name(FILE + ".1"), since, adw_id)
        start_at = 0
    handle, inode, buffer = None, None, b""
    while not stop():
        if handle is None:
            try:
                handle = open(target, "rb")
            except FileNotFoundError:
                time.sleep(interval)
                start_at = 0  # made later: all of it is new
                continue
            inode = os.fstat(handle.fileno()).st_ino
            handle.seek(0, os.SEEK_END) if start_at is None else handle.seek(start_at)
        chunk = handle.read()
        if chunk:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            yield from _matching(lines, adw_id, since)
            continue
        try:
            rotated = os.stat(target).st_ino != inode
        except FileNotFoundError:
            rotated = False
        if rotated:
            # A writer may have appended to the old file between the read above and the rotation.
            yield from _matching((buffer + handle.read()).split(b"\n"), adw_id, since)
            handle.close()
            handle, start_at, buffer = None, 0, b""
            continue
        time.sleep(interval)
    if handle is not None:
        handle.close()
