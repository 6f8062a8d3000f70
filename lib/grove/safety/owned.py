"""The ownership journal: what Grove created, recorded before it is created.

Grove only ever deletes what it can prove it made (DESIGN.md safety model). A branch named like
Grove's (`adw/x`, `feature/e/t-x`) proves nothing: users have branches like that too (issue 10,
defect 1). So every branch and database Grove creates is written here first, under a lock, and
the entry outlives the agent's state and its archive. An entry is dropped only when Grove itself
removes the thing, and before it does so: a crash in between leaves the thing unowned, which is
the safe direction (kept, never deleted).

File: agents/.grove/owned.json, {"version": 1, "branch": {name: info}, "database": {name: info}}.
"""

from __future__ import annotations

from pathlib import Path

from ..core import locks
from ..core.config import Settings
from ..core.errors import GroveError

KINDS = ("branch", "database")


def journal_path(settings: Settings) -> Path:
    return settings.grove_path / "owned.json"


def _lock(settings: Settings):
    return locks.locked(settings.lock_path("owned"), settings.lock_timeout, "the ownership journal is busy")


def _read(settings: Settings) -> dict:
    data = locks.read_json(journal_path(settings), "ownership journal")
    if data is None:
        return {"version": 1, **{kind: {} for kind in KINDS}}
    if not isinstance(data, dict) or not all(
            isinstance(data.get(kind, {}), dict) and all(isinstance(v, dict) for v in data.get(kind, {}).values())
            for kind in KINDS):
        raise GroveError(f"ownership journal {journal_path(settings)} is not a Grove journal",
                         hint="fix or move it aside; without it Grove deletes nothing it created")
    for kind in KINDS:
        data.setdefault(kind, {})
    return data


def record(settings: Settings, kind: str, name: str, **info: object) -> None:
    """Write down that Grove is about to create ``name``; call before creating it."""
    from ..core.state import now

    with _lock(settings):
        data = _read(settings)
        data[kind][name] = {"created_at": now(), **info}
        locks.atomic_write_json(journal_path(settings), data)


def forget(settings: Settings, kind: str, name: str) -> None:
    """Drop ``name`` from the journal; call just before Grove removes it (see the module note)."""
    with _lock(settings):
        data = _read(settings)
        if data[kind].pop(name, None) is not None:
            locks.atomic_write_json(journal_path(settings), data)


def annotate(settings: Settings, kind: str, name: str, **info: object) -> bool:
    """Add ``info`` to ``name``'s record if there still is one (never re-creates a forgotten entry:
    a record is a claim of ownership, made only before creating); True when it was there."""
    with _lock(settings):
        data = _read(settings)
        if name not in data[kind]:
            return False
        data[kind][name].update(info)
        locks.atomic_write_json(journal_path(settings), data)
        return True


def owner(settings: Settings, kind: str, name: str) -> dict | None:
    """Grove's record of ``name`` (e.g. {"adw_id": ..., "created_at": ...}), or None: not Grove's."""
    return _read(settings)[kind].get(name)


def entries(settings: Settings, kind: str) -> dict[str, dict]:
    return dict(_read(settings)[kind])
