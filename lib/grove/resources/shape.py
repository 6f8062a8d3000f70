"""The one shape every per-agent resource has, so the operations loop over a table of them
(lib/grove/resources/table.py) instead of naming each one.

A resource says what it does at each moment of an agent's life; a moment it has nothing to do at
is left None:
- ``prepare(agent)``: setup makes it for the agent (a step of the chain, and a single-step task);
- ``plan_release(settings, adw_id, options)``: teardown asks, before anything changes, what it will
  do, so a refusal (a database server that cannot be reached) stops the teardown while nothing is
  gone yet;
- ``release(settings, adw_id, plan)``: teardown frees it, once what it holds is saved;
- ``check(settings, found)``: doctor lists what a crash left of it (``found``: the agents there are);
- ``repair(settings, problem)``: doctor --fix repairs one of the problems ``check`` listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..core.config import Settings

# What a step ends as, what it says, and the files it wrote into the worktree (Grove hides them
# from git when they are tracked, and the archive knows them as Grove's own).
Outcome = tuple[str, str, list[str]]
DONE = ("done", "kept")  # outcomes that mean "this worktree has it"


class Agent:
    """One agent's worktree as a resource's ``prepare`` sees it.
    (Plain classes here: a dataclass costs about half a millisecond at import, on every setup.)"""

    __slots__ = ("settings", "adw_id", "path", "values", "earlier", "reset", "pooled", "shared", "created")

    def __init__(self, settings: Settings, adw_id: str, path: Path, values: dict[str, str], *,
                 earlier: str | None = None, reset: bool = False, pooled: dict | None = None, shared: Any = None,
                 created: list[str] | None = None):
        self.settings, self.adw_id, self.path = settings, adw_id, path
        self.values = values  # the env values: ports, ADW_ID, the database URL
        self.earlier = earlier  # this step's outcome in an earlier run on this same worktree
        self.reset = reset  # --reset-db: do it again although an earlier run did
        self.pooled = pooled or {}  # what the pool already did for this step (ops/pool.py)
        self.shared = shared  # what the agents of one setup_many share (the interpreter discovery)
        self.created = created  # Postgres databases this run made, for its rollback


class Found:
    """What doctor found before it asks each resource: the agents that exist, and who is busy."""

    __slots__ = ("live", "busy")

    def __init__(self, live: set[str], busy: Callable[[str], bool]):
        self.live, self.busy = live, busy


class Resource:
    """One per-agent resource: what it does at each moment (None: nothing) and how it is driven."""

    __slots__ = ("name", "prepare", "switch", "long", "writes_files", "in_pool", "plan_release", "release",
                 "released_as", "check", "problems", "repair")

    def __init__(self, name: str, prepare: Callable[[Agent], Outcome] | None = None, *, switch: str = "",
                 long: bool = False, writes_files: bool = False, in_pool: bool = False,
                 plan_release: Callable[[Settings, str, dict], Any] | None = None,
                 release: Callable[[Settings, str, Any], Any] | None = None, released_as: str = "",
                 check: Callable[[Settings, Found], list[dict]] | None = None, problems: tuple[str, ...] = (),
                 repair: Callable[[Settings, dict], None] | None = None):
        self.name = name  # the setup step it fills, and its key in a state's "steps"
        self.prepare = prepare
        self.switch = switch  # the setup request's flag that turns it off: files, install or db (ops/chain.py)
        self.long = long  # setup reports it as a long step (it prints while it runs)
        self.writes_files = writes_files  # prepare writes files into the worktree, which Grove then hides from git
        self.in_pool = in_pool  # the pool prepares it ahead of time (with placeholder ports); else at take
        self.plan_release = plan_release
        self.release = release
        self.released_as = released_as  # the key of teardown's result (and JSON) that holds what release returned
        self.check = check
        self.problems = problems  # the problem kinds its check reports and its repair fixes
        self.repair = repair

    def __repr__(self) -> str:
        return f"Resource({self.name!r})"


def problem(kind: str, detail: str, fix: str | None, **where) -> dict:
    """One entry of `inv doctor`'s report (docs/json.md)."""
    return {"kind": kind, "detail": detail, "fix": fix, "fixed": False, **where}
