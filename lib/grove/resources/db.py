"""The agent's database: its own Postgres database (ADW_DB_URL, agentdb.py), then the repo's reset
script run in the worktree with the agent's ports. As a resource: setup makes it, teardown dumps
and drops it, doctor finds the databases whose agent is gone."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import proc, state
from ..core.config import Settings
from ..core.errors import GroveError
from . import agentdb, generated
from .shape import DONE, Agent, Found, Outcome, Resource, problem


def run_script(worktree: Path, script: str, env: dict[str, str], timeout: float) -> bool:
    """Run ``script`` (relative to the worktree) with cwd at the worktree; False when it is absent."""
    path = worktree / script
    if not path.is_file():
        return False
    argv = [str(path)] if os.access(path, os.X_OK) else ["bash", str(path)]
    proc.run(argv, cwd=worktree, env=env, timeout=timeout, what=f"database reset ({script})")
    return True


KEPT = "reset by an earlier run; --reset-db resets it again"


def reset_db(settings: Settings, path: Path, values: dict[str, str], enabled: bool = True, *,
             kept: bool = False, reset: bool = True, created: list[str] | None = None,
             adw_id: str | None = None) -> tuple[str, str]:
    """The agent's Postgres database (with ADW_DB_URL), then the reset script with its env.

    ``kept``: an earlier run finished this step, so the database and what the agent wrote in it
    stay and the script is not run again (a database that is gone is made anew, script and all).
    ``reset``: recreate the database from the template (``--reset-db``, ``inv db.reset``).
    ``adw_id``: the agent, when its worktree is not named after it (an adopted one, issue 22).
    """
    adw_id = adw_id or path.name
    if not enabled:
        return "skipped", "--no-db"
    notes = []
    if reset and not kept and settings.state_path(adw_id).exists():
        # An agent's worktree reset on purpose: the script will overwrite its sqlite rows, so each
        # sqlite database in it is copied into the agent's archive first (issue 20, item 3).
        from ..safety import dbdump

        saved = [dbdump.copy_sqlite(settings, adw_id, path, rel) for rel in dbdump.sqlite_files(path)]
        notes += [f"saved {p.name} to the archive" for p in saved]
    if agentdb.configured(settings):
        outcome = agentdb.ensure(settings, adw_id, reset=reset and not kept, created=created)
        if settings.state_path(adw_id).exists():  # the merge's integration worktree has no state
            state.update(settings, adw_id, lambda s: s.update(database=outcome.for_state()))
        if kept and outcome.action == "kept":
            return "kept", f"{outcome.name}: {KEPT}"
        notes.append(outcome.line())
    elif kept:
        return "kept", KEPT
    if not settings.db_reset:
        return ("done" if notes else "skipped"), "; ".join(notes) or "ADW_DB_RESET is empty"
    env = dict(os.environ, **values, ADW_ID=adw_id, ADW_WORKTREE=str(path))
    before = generated.snapshot(settings, path) if (path / settings.db_reset).is_file() else None
    try:
        ran = run_script(path, settings.db_reset, env, settings.install_timeout)
    except GroveError as exc:
        exc.message = agentdb.scrub(settings, exc.message)  # the script may echo DATABASE_URL
        raise
    if ran and before is not None:
        _record_grove_files(path, generated.made_between(before, generated.snapshot(settings, path)))
    notes.append(settings.db_reset if ran else f"{settings.db_reset} absent")
    return ("done" if ran or len(notes) > 1 else "skipped"), "; ".join(notes)


def _record_grove_files(path: Path, made: dict[str, list[int]]) -> None:
    """Remember the ignored files the reset wrote, with their size and mtime, beside the worktree's
    own git records (generated.record): while unchanged they are Grove's and a removal need not
    archive them; once the agent writes to one, it is kept (issue 20). The record moves with a
    pooled worktree when an agent takes it."""
    if made:
        generated.record(path, made)


def prepare(agent: Agent) -> Outcome:
    """Setup's db step. A re-run keeps what an earlier run made in this same worktree, and the rows
    the agent wrote there (issue 10, defect 6); ``agent.reset`` (`--reset-db`) resets it again."""
    pooled = agent.pooled.get("db_reason")
    if pooled and not agent.reset:
        return "kept", f"the pool's database: {pooled}", []
    outcome, detail = reset_db(agent.settings, agent.path, agent.values, kept=agent.earlier in DONE and not agent.reset,
                               reset=agent.reset, created=agent.created, adw_id=agent.adw_id)
    return outcome, detail, []


def plan_release(settings: Settings, adw_id: str, options: dict) -> list[dict]:
    """Before a teardown changes anything: which of the agent's databases are dumped and dropped,
    which kept (an unreachable server refuses here, exit 1)."""
    return agentdb.plan_teardown(settings, adw_id, options.get("keep_db", False), options.get("keep_db_why", "--keep-db"))


def check(settings: Settings, found: Found) -> list[dict]:
    """Postgres databases Grove recorded creating whose agent is gone (no state dir, no worktree dir;
    a corrupt state still counts as an agent) and cannot be resumed (no branch of its left: issue 20,
    item 3). Only the journal counts, never a name (issue 14); one kept by `teardown --keep-db` or gc
    is not listed."""
    try:
        orphans = agentdb.orphans(settings, found.live, found.busy)
    except GroveError as exc:
        return [problem("database_check_failed", f"cannot check Grove's databases: {exc.message}", None,
                        hint=exc.hint or "fix ADW_DB_URL or start the server, then run `inv doctor` again")]
    return [problem("orphan_database", f"database {o['database']} (made by Grove for {o['adw_id']}) has no agent",
                    "dump it into agents/.archive/<adw_id>/, then drop it (its sessions are ended first)", **o)
            for o in orphans]


def repair(settings: Settings, p: dict) -> None:
    p["dump"] = agentdb.drop_orphan(settings, p["database"], p["adw_id"])
    p["fixed"] = p["dump"] is not None


RESOURCE = Resource("db", prepare, switch="db", long=True, plan_release=plan_release,
                    release=agentdb.apply_teardown, released_as="databases",
                    check=check, problems=("orphan_database", "database_check_failed"), repair=repair)
