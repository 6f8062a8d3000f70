"""Grove's Invoke tasks, assembled: the task table that `inv`, `inv -r` and `grove` all load.

Each task parses flags, calls one library function, and prints or --json's the result. The library
is imported inside the task bodies, so `inv --list` pays only for Invoke and these small modules.
"""

from __future__ import annotations

import gc as _gc

from invoke import Collection

from ..core.defaults import DEFAULTS, field_name
from ..core.hints import speak
from .agents import exec_, init, list_, path, run, setup, status, teardown
from .integrations import adopt, events, hook, mcp
from .maintenance import cleanup_epic, doctor, gc, git_worktrees, pool, salvage
from .merging import conflicts, merge, sync
from .services import down, logs, ps, up
from .steps import (db_reset, deps_install, env_merge, env_ports, env_repoint, env_stage, git_fetch, ports_claim,
                    ports_release, ports_show, state_archived, worktree_add)

# Top-level tasks, then each namespace as a plain table of {task name: task}.
TOP = {"setup": setup, "teardown": teardown, "status": status, "path": path, "run": run, "exec": exec_, "merge": merge,
       "sync": sync, "conflicts": conflicts,
       "list": list_, "git-worktrees": git_worktrees, "cleanup-epic": cleanup_epic, "gc": gc, "doctor": doctor,
       "salvage": salvage, "init": init, "pool": pool, "events": events, "adopt": adopt, "hook": hook, "mcp": mcp,
       "up": up, "down": down, "ps": ps, "logs": logs}
NAMESPACES = {
    "git": {"fetch": git_fetch},
    "worktree": {"add": worktree_add},
    "ports": {"claim": ports_claim, "release": ports_release, "show": ports_show},
    "env": {"ports": env_ports, "merge": env_merge, "repoint": env_repoint, "stage": env_stage},
    "deps": {"install": deps_install},
    "db": {"reset": db_reset},
    "state": {"show": status, "archived": state_archived},  # state.show is `inv status` under its namespace
}


def _speak(body):
    """The task's description and flag help naming this program (`grove` or `inv`, issue 21)."""
    body.__doc__ = speak(body.__doc__ or "")
    body.help = {flag: speak(text) for flag, text in body.help.items()}
    return body


def build_namespace() -> Collection:
    root = Collection()
    for name, body in TOP.items():
        root.add_task(_speak(body), name=name)
    for space, table in NAMESPACES.items():
        sub = Collection(space)
        for name, body in table.items():
            sub.add_task(_speak(body), name=name)
        root.add_collection(sub)
    # Defaults live in defaults.py; these None keys only make invoke.yaml (grove.port_slots: 20) and
    # INVOKE_GROVE_PORT_SLOTS=20 visible to Grove: Invoke loads env vars only for keys it already has.
    root.configure({"grove": {field_name(key): None for key in DEFAULTS}})
    return root


ns = build_namespace()

# What the imports made lives until exit: the cyclic collector need not walk it again, neither in
# the collections a run triggers nor at interpreter shutdown (`inv --list` exits ~2 ms sooner).
_gc.freeze()
