"""Agent ids and branch names: validated before anything touches disk or git."""

from __future__ import annotations

import re

from .config import Settings
from .errors import bad_input

# ASCII only, so unicode look-alikes of an existing id cannot exist; no leading '-' (an option to
# git), '.' (hidden, '..'), or path separators; short enough for any filesystem and port table.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Names Windows refuses as files; a repo shared with Windows users must not get them.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_SLUG = re.compile(r"[^a-z0-9]+")


def check_id(adw_id: str) -> str:
    if not isinstance(adw_id, str) or not _ID.match(adw_id):
        raise bad_input(f"invalid adw_id {adw_id!r}",
                        "use 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit")
    if adw_id.lower() in _RESERVED:
        raise bad_input(f"invalid adw_id {adw_id!r}: a reserved device name on Windows")
    return adw_id


def check_unique_case(settings: Settings, adw_id: str) -> None:
    """Refuse an id that differs from an existing agent's only by case (they collide on macOS/Windows)."""
    taken: set[str] = set()
    for root in (settings.agents_path, settings.trees_path):
        if root.is_dir():
            taken.update(p.name for p in root.iterdir() if not p.name.startswith("."))
    clash = [name for name in taken if name != adw_id and name.lower() == adw_id.lower()]
    if clash:
        raise bad_input(f"adw_id {adw_id!r} differs from existing agent {clash[0]!r} only by case",
                        "pick a different id")


def new_id() -> str:
    """8 hex characters, as the ADW tools name their runs."""
    import secrets  # lazy: hmac and OpenSSL's hashlib cost a millisecond at every start-up (issue 12)

    return secrets.token_hex(4)


def slug(text: str, limit: int = 40) -> str:
    """A name safe for git refs and file names: lower-case words joined by '-'."""
    return _SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-")


def default_branch(adw_id: str, epic_id: str | None = None, task_name: str | None = None) -> str:
    """``adw/<id>``, or ``feature/<epic>/<task-slug>-<id>`` for grouped agents.

    The id suffix keeps two agents on the same task apart (the seed's names collide).
    """
    if epic_id:
        epic = re.sub(r"[^A-Za-z0-9._-]+", "-", epic_id).strip("-.")
        task = slug(task_name or "") or "task"
        if not epic:
            raise bad_input(f"epic id {epic_id!r} has no usable characters")
        return f"feature/{epic}/{task}-{adw_id}"
    return f"adw/{adw_id}"


_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")


def from_name(name: str, limit: int = 56) -> str:
    """A valid adw_id made from a free-form name (a Claude Code worktree name, a directory): every
    run of other characters becomes '-', leading '-'/'_' go, at most ``limit`` characters (room for
    a ``-N`` suffix), ``agent`` when nothing usable is left, a reserved device name gets ``-1``."""
    text = _NOT_ID.sub("-", name or "").lstrip("-_")[:limit].rstrip("-_") or "agent"
    return text + "-1" if text.lower() in _RESERVED else text


def free_id(settings: Settings, wanted: str, taken=lambda adw_id: False) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3`` ...: the first that no agent state, trees/ entry or
    case-variant holds, and that ``taken(id)`` does not refuse (issue 22: collisions)."""
    used: set[str] = set()
    for root in (settings.agents_path, settings.trees_path):
        if root.is_dir():
            used.update(p.name.lower() for p in root.iterdir())
    n = 1
    while True:
        candidate = wanted if n == 1 else f"{wanted}-{n}"
        if candidate.lower() not in used and not taken(candidate):
            return check_id(candidate)
        n += 1
