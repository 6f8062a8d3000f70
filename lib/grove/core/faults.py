"""Test-only crash points: GROVE_FAULT=setup:after:worktree makes the process die by SIGKILL there.

The torture and model-based tests use them to prove that every crash point can be recovered.
Outside tests GROVE_FAULT is unset and a call costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def fault(op: str, when: str, step: str) -> None:
    if os.environ.get("GROVE_FAULT") == f"{op}:{when}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
