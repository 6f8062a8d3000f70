"""Every per-agent resource, in the order setup prepares them (each module holds its own entry,
in the one shape of shape.py). The setup chain, the single-step tasks, adopt, the pool, teardown
and doctor loop over this table; a new resource is a module with a ``Resource`` and a line here.

Not in it: the worktree and branch themselves (ops/worktree.py), the services an agent runs
(started on request, stopped by the worktree's removal before any file goes: ops/services.py).
"""

from __future__ import annotations

from . import db, deps, envfiles, include, ports, repoint, submodules
from .shape import Resource

RESOURCES: tuple[Resource, ...] = (ports.RESOURCE, submodules.RESOURCE, include.RESOURCE, envfiles.PORTS_ENV,
                                   envfiles.ENV, repoint.RESOURCE, deps.RESOURCE, db.RESOURCE)
BY_NAME = {r.name: r for r in RESOURCES}
# What setup prepares after the worktree exists (the ports are claimed before it, in the chain's head).
PREPARED = tuple(r for r in RESOURCES if r.prepare)
FILES = tuple(r for r in PREPARED if r.writes_files)
# What teardown releases once the worktree's files are saved and removed, in this order.
RELEASED = tuple(r for r in RESOURCES if r.release)
# What doctor asks about what a crash left behind, and which resource repairs which problem.
CHECKED = tuple(r for r in RESOURCES if r.check)
REPAIRS = {kind: r for r in CHECKED for kind in r.problems}
