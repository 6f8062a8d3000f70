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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.config import Settings

# What a step ends as, what it says, and the files it wrote into the worktree (Grove hides them
# from git when they are tracked, and the archive knows them as Grove's own).
Outcome = tuple[str, str, list[str]]
DONE = ("done", "kept")  # outcomes that mean "this worktree has it"


@dataclass
class Agent:
    """One agent's worktree as a resource's ``prepare`` sees it."""

    settings: Settings
    adw_id: str
    path: Path
    values: dict[str, str]  # the env values: ports, ADW_ID, the database URL
    earlier: str | None = None  # this step's outcome in an earlier run on this same worktree
    reset: bool = False  # --reset-db: do it again although an earlier run did
    pooled: dict = field(default_factory=dict)  # what the pool already did for this step (ops/pool.py)
    shared: Any = None  # what the agents of one setup_many share (the interpreter discovery)
    created: list[str] | None = None  # Postgres databases this run made, for its rollback


@dataclass
class Found:
    """What doctor found before it asks each resource: the agents that exist, and who is busy."""

    live: set[str]
    busy: Callable[[str], bool]


@dataclass(frozen=True)
class Resource:
    name: str  # the setup step it fills, and its key in a state's "steps"
    prepare: Callable[[Agent], Outcome] | None = None
    switch: str = ""  # the setup request's flag that turns it off: files, install or db (ops/chain.py)
    long: bool = False  # setup reports it as a long step (it prints while it runs)
    writes_files: bool = False  # prepare writes files into the worktree, which Grove then hides from git
    in_pool: bool = False  # the pool prepares it ahead of time (with placeholder ports); else at take
    plan_release: Callable[[Settings, str, dict], Any] | None = None
    release: Callable[[Settings, str, Any], Any] | None = None
    released_as: str = ""  # the key of teardown's result (and JSON) that holds what release returned
    check: Callable[[Settings, Found], list[dict]] | None = None
    problems: tuple[str, ...] = ()  # the problem kinds its check reports and its repair fixes
    repair: Callable[[Settings, dict], None] | None = None


def problem(kind: str, detail: str, fix: str | None, **where) -> dict:
    """One entry of `inv doctor`'s report (docs/json.md)."""
    return {"kind": kind, "detail": detail, "fix": fix, "fixed": False, **where}
