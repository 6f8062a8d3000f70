"""An agent's recorded services (issue 23), the half every removal path needs: is a recorded
service still running (pid + start time, not a zombie), and stopping it. `grove up` and friends
(ops/services.py) start them; teardown, gc and merge --cleanup stop them through
ops/worktree.py's stop_processes, which cannot import the ops that start them (layers)."""

from __future__ import annotations

from typing import Callable

from ..core import liveness, portable, state
from ..core.config import Settings
from ..core.errors import GroveError
from . import ports


def running(rec: dict) -> bool:
    """The recorded service process still runs: its pid *and* its start time (core/liveness.py),
    and it is no zombie (an exited service nobody reaped keeps its /proc entry)."""
    return bool(rec.get(liveness.KEY)) and liveness.holder_alive(rec) and portable.alive(rec["pid"])


def record_running(settings: Settings, adw_id: str) -> None:
    """The lease's running processes: the agent's live services (none: it no longer counts)."""
    recs = (state.load(settings, adw_id) or {}).get("services") or {}
    ports.set_running(settings, adw_id, [{"pid": r["pid"], liveness.KEY: r.get(liveness.KEY)}
                                         for r in recs.values() if running(r)])


def stop_services(settings: Settings, adw_id: str, names: list[str] | None) -> list[dict]:
    """Stop the recorded services ``names`` (None: all) of ``adw_id`` and forget them."""
    s = state.load(settings, adw_id)
    recs = dict((s or {}).get("services") or {})
    chosen = [n for n in recs if names is None or n in names]
    if not chosen:
        return []
    backend = portable.process_backend(settings.process_backend)
    out = []
    for name in chosen:
        rec = recs[name]
        how = portable.stop_group(rec["pid"], _is_leader(rec), backend, settings.stop_grace, rec.get("mark"))
        out.append({"adw_id": adw_id, "service": name, "pid": rec["pid"], "signal": how,
                    "outcome": "stopped" if how else "not_running"})

    def forget(st: dict) -> None:
        for name in chosen:
            (st.get("services") or {}).pop(name, None)
        if not st.get("services"):
            st.pop("services", None)

    if s is not None:
        state.update(settings, adw_id, forget)
    return out


def _is_leader(rec: dict) -> Callable[[int], bool]:
    """Whether ``pid`` still is the recorded service: its pid and start time (never a pid alone)."""
    def check(pid: int) -> bool:
        return pid == rec["pid"] and bool(rec.get(liveness.KEY)) and liveness.holder_alive(rec)
    return check


def stop_recorded(settings: Settings, adw_id: str) -> list[dict]:
    """Teardown, gc and merge --cleanup: stop the agent's recorded services before the worktree's
    processes are stopped by where they run (a service may have left the worktree: cd /tmp)."""
    try:
        stopped = stop_services(settings, adw_id, None)
    except GroveError:
        return []  # a corrupt state: the worktree sweep still stops what runs inside
    if stopped:
        try:
            ports.set_running(settings, adw_id, [])
        except GroveError:
            pass
    return [{"pid": r["pid"], "name": r["service"], "signal": r["signal"]} for r in stopped if r["signal"]]
