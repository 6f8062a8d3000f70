"""Test-only crash points: GROVE_FAULT=setup:after:worktree makes the process die by SIGKILL there.

The torture and model-based tests use them to prove that every crash point can be recovered.
Outside tests GROVE_FAULT is unset and a call costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def fault(op: str, when: str, step: str) -> None:
    if os.environ.get("GROVE_FAULT") == f"{op}:{when}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


# Test-only holds (issue 25): GROVE_HOLD=<point>@<dir> makes a race deterministic. A process about to
# take a lock says so (`announce`: <dir>/want-<pid>); inside the critical section (`hold`: <dir>/in-<pid>)
# it waits until another process has announced, then gives that one a grace period to come in too.
# With the lock the other cannot come in and the grace runs out; without it (a bug) both are inside
# at once, every time, instead of once in a thousand runs.
HOLD_GRACE = 2.0


def _hold_dir(point: str) -> Path | None:
    spec = os.environ.get("GROVE_HOLD", "")
    name, _, directory = spec.partition("@")
    if name != point or not directory:
        return None
    from pathlib import Path

    return Path(directory)


def announce(point: str) -> None:
    where = _hold_dir(point)
    if where is not None:
        (where / f"want-{os.getpid()}").touch()


def hold(point: str, note: str = "") -> None:
    """``note`` (what this process is about to take) goes into <dir>/in-<pid> for the test to compare."""
    where = _hold_dir(point)
    if where is None:
        return
    import time

    me = os.getpid()
    (where / f"in-{me}").write_text(note)

    def others(kind: str) -> bool:
        return any(p.name != f"{kind}-{me}" for p in where.glob(f"{kind}-*"))

    for limit, kind in ((60.0, "want"), (HOLD_GRACE, "in")):
        end = time.monotonic() + limit
        while not others(kind) and time.monotonic() < end:
            time.sleep(0.01)
