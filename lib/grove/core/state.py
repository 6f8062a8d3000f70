"""The per-agent state file ``agents/<adw_id>/adw_state.json``: lifecycle, locked updates, archive.

Every change is a read-modify-write under the agent's state lock, written atomically, so two
agents updating one state at once never lose an update and readers never see a torn file.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import events, locks
from .config import Settings
from .errors import GroveError, bad_input

TERMINAL = ("completed", "failed", "merged", "conflict")


def _statuses() -> tuple[str, ...]:
    # grove.models (four dataclasses, 2 ms) is imported when a status is checked, not at every start-up.
    from .models import STATUSES

    return STATUSES


def __getattr__(name: str):
    if name == "STATUSES":  # state.STATUSES, as before
        return _statuses()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Where each status may go next. Re-setting the current status is always allowed (to update
# agent_id or error_message). `created` is reachable again only from `failed`: a setup re-run.
# `conflict` is reachable from a working status too: `inv sync` can stop on one (issue 13).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "created": ("assigned", "in_progress", "completed", "failed", "cleaned", "conflict"),
    "assigned": ("in_progress", "completed", "failed", "cleaned", "conflict"),
    "in_progress": ("assigned", "completed", "failed", "cleaned", "conflict"),
    "completed": ("in_progress", "merged", "conflict", "failed", "cleaned"),
    "failed": ("created", "assigned", "in_progress", "completed", "cleaned"),
    "conflict": ("in_progress", "completed", "merged", "failed", "cleaned"),
    "merged": ("cleaned",),
    "cleaned": (),
}
STAMPS = {"assigned": "assigned_at", "completed": "completed_at", "merged": "merged_at", "cleaned": "cleaned_at"}
HISTORY_LIMIT = 50


def now() -> str:
    """ISO 8601 in UTC, to the second, e.g. 2026-11-22T10:00:00Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def new(settings: Settings, adw_id: str, branch: str, base: str, **fields) -> dict:
    stamp = now()
    state: dict[str, Any] = {
        "adw_id": adw_id,
        "branch": branch,
        "base_branch": base,
        "base_commit": None,
        "worktree_path": str(settings.worktree_path(adw_id)),
        "slot": None,
        "backend_port": None,
        "frontend_port": None,
        "ports": {},
        "status": "created",
        "created_at": stamp,
        # created_at is to the second; this orders agents made within one second (issue 10, defect 12).
        "created_ns": time.time_ns(),
        "updated_at": stamp,
        "assigned_at": None,
        "completed_at": None,
        "merged_at": None,
        "cleaned_at": None,
        "steps": {},
        "error_message": None,
        "epic_id": None,
        "task_name": None,
        "agent_id": None,
        "commits": [],
        "conflict_files": [],
        "database": None,  # the agent's Postgres database (issue 14): name, redacted url, template
        "history": [{"status": "created", "at": stamp, "by": _who()}],
    }
    state.update(fields)
    return state


def _who() -> str:
    return f"{os.environ.get('USER') or 'pid'}@{os.getpid()}"


def lock_path(settings: Settings, adw_id: str) -> Path:
    return settings.lock_path(f"state-{adw_id}")


def load(settings: Settings, adw_id: str) -> dict | None:
    path = settings.state_path(adw_id)
    data = locks.read_json(path, "state file")
    if data is not None and (not isinstance(data, dict) or data.get("adw_id") != adw_id):
        raise GroveError(f"state file {path} does not hold the state of {adw_id}",
                         hint="fix or move the file aside; Grove will not overwrite it")
    return data


def require(settings: Settings, adw_id: str) -> dict:
    data = load(settings, adw_id)
    if data is None:
        raise bad_input(f"no agent {adw_id!r}: {settings.state_path(adw_id)} does not exist",
                        "see `inv list` for the agents Grove knows")
    return data


def save(settings: Settings, state: dict) -> None:
    """Write a state; the caller holds the state lock."""
    state["updated_at"] = now()
    locks.atomic_write_json(settings.state_path(state["adw_id"]), state)


def update(settings: Settings, adw_id: str, change: Callable[[dict], None], *, create: dict | None = None) -> dict:
    """Locked read-modify-write of one state; ``create`` is the state to start from when none exists."""
    with locks.locked(lock_path(settings, adw_id), settings.lock_timeout, f"state of {adw_id} is busy"):
        state = load(settings, adw_id)
        before = None if state is None else state.get("status")
        if state is None:
            if create is None:
                raise bad_input(f"no agent {adw_id!r}: {settings.state_path(adw_id)} does not exist")
            state = create
        change(state)
        save(settings, state)
        # Every status change goes through here (apply_status is only ever applied inside update or
        # archive_locked): the one place that writes the event stream's status lines (issue 22).
        events.status_change(settings, adw_id, before, state)
        return state


def check_transition(current: str, target: str) -> None:
    if target not in _statuses():
        raise bad_input(f"unknown status {target!r}", f"one of: {', '.join(_statuses())}")
    if target != current and target not in TRANSITIONS.get(current, ()):
        # `cleaned` is a teardown's to record: not offered to --set (issue 21: the hint listed it, then refused it).
        allowed = ", ".join(s for s in TRANSITIONS.get(current, ()) if s != "cleaned") or "none by hand"
        extra = "; merged, once the branch is in the base" if target == "merged" else ""
        extra += "; cleaned is recorded by a teardown" if "cleaned" in TRANSITIONS.get(current, ()) else ""
        raise bad_input(f"cannot go from {current} to {target}",
                        f"from {current} the allowed statuses are: {allowed}{extra}")


def apply_status(state: dict, target: str, *, by: str | None = None, error: str | None = None,
                 checked: bool = False, **fields) -> None:
    """Validate and apply a transition in memory: timestamp, history, fields. ``checked``: the caller
    proved a transition the table does not list (set_status, from the git facts)."""
    if not checked:
        check_transition(state["status"], target)
    stamp = now()
    state["status"] = target
    if target in STAMPS:
        state[STAMPS[target]] = stamp
    if error is not None or target in ("failed", "conflict"):
        state["error_message"] = error
    elif target not in ("failed", "conflict"):
        state["error_message"] = None
    state.update({k: v for k, v in fields.items() if v is not None})
    history = state.setdefault("history", [])
    history.append({"status": target, "at": stamp, "by": by or state.get("agent_id") or _who()})
    del history[:-HISTORY_LIMIT]


def set_status(settings: Settings, adw_id: str, target: str, *, by: str | None = None,
               error: str | None = None, facts: bool = False, **fields) -> dict:
    """The locked transition behind ``inv status --set`` and ``update_worktree_status``.
    ``facts``: a person or an orchestrator says so, and `merged` may then rest on the branch being in
    the base (``merged_in_fact``); the merge queue's own recording keeps the table (a status changed
    during a merge is left as it is)."""
    if target not in _statuses():
        raise bad_input(f"unknown status {target!r}", f"one of: {', '.join(_statuses())}")
    if target == "cleaned":
        # The seed's "worktree removed and archived": only a teardown may record it, or a live worktree
        # would be labelled gone and skipped by every cleanup.
        raise bad_input(f"{adw_id}: `cleaned` is recorded by a teardown, not set by hand",
                        f"inv teardown --adw-id {adw_id} (cleanup_worktree) removes and archives it")
    refresh = _commit_refresher(settings)

    def change(s: dict) -> None:
        apply_status(s, target, by=by, error=error, checked=_follows_facts(settings, s, target, facts), **fields)
        refresh(s)

    return update(settings, adw_id, change)


BACK_FROM_MERGED = ("completed", "in_progress")


def _follows_facts(settings: Settings, s: dict, target: str, facts: bool = False) -> bool:
    """A status follows the facts; True allows a transition beyond the table.

    - `merged` is refused while the branch has commits the base lacks (issue 20, item 14b), whoever asks;
    - with ``facts`` (a person or an orchestrator says so: `status --set`, update_worktree_status),
      `merged` from any live status when the base contains the branch and it has commits of its own
      (issue 21: the seed's orchestrator merges with git itself, then marks `merged` from `assigned`);
      the merge queue's own recording keeps the table;
    - a `merged` agent whose branch gained commits the base lacks (it committed during
      `merge --cleanup`) may go back to completed or in_progress.
    """
    back = s["status"] == "merged" and target in BACK_FROM_MERGED
    if target == s["status"] or not (target == "merged" or back):
        return False  # no git to ask: most transitions (setup, exec) pay nothing here
    inside = branch_in_base(settings, s)
    if target == "merged":
        if inside is False:
            base = s.get("base_branch") or settings.base_branch
            raise bad_input(f"{s['adw_id']} cannot be marked merged: branch {s['branch']} has commits that are "
                            f"not in {base}", f"merge it first: inv merge --adw-id {s['adw_id']}")
        return bool(facts and inside and s["status"] != "cleaned" and "merged" not in TRANSITIONS[s["status"]]
                    and _has_own_commits(settings, s))
    if inside is not False:
        raise bad_input(f"cannot go from merged to {target}: branch {s['branch']} is in the base, with "
                        "nothing new", "from merged the allowed statuses are: cleaned (or back to completed "
                                       "or in_progress once the branch has commits the base lacks)")
    return True


def _has_own_commits(settings: Settings, s: dict) -> bool:
    """A branch with no commit of its own is "contained" in any base, yet nothing of it was merged."""
    from . import git

    branch = f"refs/heads/{s['branch']}"
    return bool(git.rev(settings.repo, branch)) and (
        not s.get("base_commit") or bool(git.commits_between(settings.repo, s["base_commit"], branch)))


def agent_at(settings: Settings, real: str) -> str | None:
    """The agent whose state names the worktree at the real path ``real``, if any."""
    for adw_id in all_ids(settings):
        s = load(settings, adw_id)
        if s is not None and os.path.realpath(s["worktree_path"]) == real:
            return adw_id
    return None


def branch_in_base(settings: Settings, s: dict) -> bool | None:
    """The agent's branch is contained in its base (ancestry, patch-id or tree, as `merge` counts it),
    locally or at the remote; None when there is no branch or no base to compare with."""
    from . import git

    if not git.branch_exists(settings.repo, s["branch"]):
        return None
    base = s.get("base_branch") or settings.base_branch
    refs = [r for r in (f"refs/heads/{base}", f"refs/remotes/{settings.remote}/{base}") if git.rev(settings.repo, r)]
    if not refs:
        return None
    return any(git.is_merged(settings.repo, f"refs/heads/{s['branch']}", ref) for ref in refs)


def _commit_refresher(settings: Settings) -> Callable[[dict], None]:
    from . import git

    def refresh(state: dict) -> None:
        # `commits` follows the branch on every status change (issue 3).
        base = state.get("base_commit")
        if base and git.branch_exists(settings.repo, state["branch"]):
            state["commits"] = git.commits_between(settings.repo, base, f"refs/heads/{state['branch']}")

    return refresh


def all_ids(settings: Settings) -> list[str]:
    """Ids that have a state directory (hidden entries like .grove and .archive are Grove's own)."""
    root = settings.agents_path
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "adw_state.json").exists())


def discard(settings: Settings, adw_id: str) -> None:
    """Remove a state a rolled-back setup or adoption made this very run (it recorded nothing else)."""
    path = settings.state_path(adw_id)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # not empty: something else lives there, and stays


def archive(settings: Settings, adw_id: str, state: dict) -> Path:
    """Move the state to agents/.archive/<adw_id>-<utc timestamp>.json, then drop its directory."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = settings.archive_path / f"{adw_id}-{stamp}.json"
    n = 1
    while target.exists():
        n += 1
        target = settings.archive_path / f"{adw_id}-{stamp}-{n}.json"
    locks.atomic_write_json(target, state)
    path = settings.state_path(adw_id)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # something else lives there (an agent's own files): leave it
    return target


def archive_locked(settings: Settings, adw_id: str, change: Callable[[dict], None]) -> Path:
    """Under the state lock: apply a last change to the state, then archive it."""
    with locks.locked(lock_path(settings, adw_id), settings.lock_timeout, f"state of {adw_id} is busy"):
        state = load(settings, adw_id)
        if state is None:
            # Callers hold the agent's op lock and found the state under it; only a hand or a
            # process ignoring the locks can have removed it since.
            raise GroveError(f"the state of {adw_id} ({settings.state_path(adw_id)}) vanished before it was archived",
                             hint="see `inv doctor`")
        before = state.get("status")
        change(state)
        state["updated_at"] = now()
        target = archive(settings, adw_id, state)
        events.status_change(settings, adw_id, before, state)
        events.emit(settings, "archived", adw_id, state.get("status"), None, archive=str(target))
        return target


def archived(settings: Settings) -> list[dict]:
    out = []
    for path in sorted(settings.archive_path.glob("*.json")):
        data = locks.read_json(path, "archived state")
        if isinstance(data, dict):
            data["archive_file"] = str(path)
            out.append(data)
    return out

