"""The setup chain's steps, in one place: the chain calls them in order, and the single-step
tasks (for CI jobs that run the chain one task at a time) call them on an existing agent."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..resources import agentdb, db, deps, envfiles, generated, ports, repoint, submodules
from ..core import state
from ..core.config import Settings
from ..core.errors import GroveError
from ..core.report import Reporter


# The chain's steps. Each works alone too (the single-step tasks call them).
# File steps return (outcome, detail, files written); install and db return (outcome, detail).

def copy_included(settings: Settings, path: Path, values: dict[str, str]) -> tuple[str, str, list[str]]:
    from ..resources import include

    return include.copy_into(settings, path)


# What .ports.env and every merged env file get; it lives with the files Grove generates, which the
# archive also needs to recognise (lib/grove/resources/generated.py, issue 20).
env_values = generated.env_values


def write_ports_env(settings: Settings, path: Path, values: dict[str, str]) -> tuple[str, str, list[str]]:
    # With a database URL (and its password) in it, the file is the agent's alone, like the env copies.
    mode = envfiles.SECRET_MODE if settings.db_url and settings.db_url_var in values else 0o644
    changed = envfiles.write_if_changed(path / envfiles.PORTS_FILE, envfiles.ports_text(values), mode)
    return ("done" if changed else "unchanged"), envfiles.PORTS_FILE, [envfiles.PORTS_FILE]


def merge_env(settings: Settings, path: Path, values: dict[str, str]) -> tuple[str, str, list[str]]:
    notes, written = [], []
    for name in settings.env_files:
        note = envfiles.merge_one(settings.repo / name, path / name, values)
        notes.append(f"{name}: {note}")
        if not note.startswith("skipped"):
            written.append(name)
    return "done", "; ".join(notes), written


def repoint_configs(settings: Settings, path: Path, values: dict[str, str] | None = None) -> tuple[str, str, list[str]]:
    notes, written = [], []
    for name in settings.path_configs:
        if not (path / name).is_file():
            notes.append(f"{name}: absent")
            continue
        changed, made = repoint.repoint_file(path / name, settings.repo, settings.trees_path, path)
        notes.append(f"{name}: {'rewritten' if changed else 'unchanged'}")
        written.append(name)
        written.extend(str(d.relative_to(path)) for d in made)
    return "done", "; ".join(notes), written


# The steps that write files into the worktree, in chain order; the single-step tasks use it too.
FILE_STEPS = {"include": copy_included, "ports_env": write_ports_env, "env": merge_env, "repoint": repoint_configs}


def record_claim(s: dict, claim: ports.Claim) -> None:
    s.update(slot=claim.slot, backend_port=claim.ports["BACKEND_PORT"],
             frontend_port=claim.ports["FRONTEND_PORT"], ports=dict(claim.ports))
    if s["status"] == "failed":  # a setup re-run after a kept failure starts over as created
        state.apply_status(s, "created")


def install(settings: Settings, path: Path, enabled: bool = True, only: tuple[str, ...] | None = None,
            shared: deps.SharedInterpreter | None = None) -> tuple[str, str]:
    """Install every install dir; ``only`` limits it to those dirs (a pooled worktree's changed ones).
    ``shared``: the interpreter discovery shared by the agents of one setup_many (deps.py).

    The dirs are independent projects (the uv server, the bun client), so they install at the same
    time (issue 12); the db step runs after all of them. The first failure is raised once all ended.
    """
    if not enabled:
        return "skipped", "--no-install"
    names = [n for n in deps.install_dirs(settings, path) if only is None or n in only]
    if only is not None and not names:
        return "kept", "installed by the pool; no lock file changed since"
    if not names:
        return "done", "no project detected (ADW_INSTALL_DIRS chooses)" if settings.detect_installs else ""
    results = _parallel([lambda d=path / n: _install_dir(d, settings.install_timeout, shared, path) for n in names])
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    detail = "; ".join(f"{n}: {r}" for n, r in zip(names, results))
    return "done", f"detected {detail}" if settings.detect_installs else detail


def _install_dir(directory: Path, timeout: float, shared: deps.SharedInterpreter | None = None,
                 root: Path | None = None) -> str:
    if not directory.is_dir():
        return "missing, skipped"
    ran = deps.install(directory, timeout, shared, root)
    return "+".join(ran) if ran else "no project"


def _parallel(jobs: list) -> list:
    """Run ``jobs`` at once, one thread each (they wait on subprocesses); results or exceptions, in order."""
    if len(jobs) == 1:
        return [_call(jobs[0])]
    import threading

    out: list = [None] * len(jobs)

    def run(i: int) -> None:
        out[i] = _call(jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _call(job):
    try:
        return job()
    except BaseException as exc:  # noqa: BLE001 - handed back to the caller, which raises it
        return exc


def submodules_step(settings: Settings, path: Path) -> tuple[str, str]:
    return submodules.populate(settings, path)


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
    if reset and not kept and settings.state_path(path.name).exists():
        # An agent's worktree reset on purpose: the script will overwrite its sqlite rows, so each
        # sqlite database in it is copied into the agent's archive first (issue 20, item 3).
        from ..safety import dbdump

        saved = [dbdump.copy_sqlite(settings, path.name, path, rel) for rel in dbdump.sqlite_files(path)]
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
        ran = db.reset(path, settings.db_reset, env, settings.install_timeout)
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


def claim_ports(settings: Settings, adw_id: str) -> dict:
    """Claim (or re-find) the agent's slot and record it in its state when it has one."""
    from ..core import ids

    ids.check_id(adw_id)
    claim = ports.claim(settings, adw_id, explicit=True)
    if settings.state_path(adw_id).exists():
        state.update(settings, adw_id, lambda s: record_claim(s, claim))
    return {"adw_id": adw_id, "slot": claim.slot, "ports": claim.ports, "reused": claim.reused}


def registry_rows(settings: Settings, everywhere: bool = False) -> list[dict]:
    """This repository's leases (``everywhere``: every lease on the machine, issue 23)."""
    return [{"slot": lease["slot"], "adw_id": lease["adw_id"], "pid": lease.get("pid"), "pid_started": lease.get("pid_started"),
             "claimed_at": lease.get("leased_at"), "explicit": bool(lease.get("explicit")),
             "ports": dict(lease["ports"]), "repo": lease["repo"], "checkout": lease.get("checkout"),
             "stale": ports.stale_reason(lease)}
            for lease in ports.leases(settings, everywhere)]


def run_step(settings: Settings, adw_id: str, name: str, report: Reporter) -> dict:
    """Run one of ports_env, env, repoint, install, db for ``adw_id`` and record it in the state."""
    s = state.require(settings, adw_id)
    path = Path(s.get("worktree_path") or settings.worktree_path(adw_id))  # an adopted one may be elsewhere
    if not path.is_dir():
        raise GroveError(f"{adw_id} has no worktree at {path}", hint=f"run `inv worktree.add --adw-id {adw_id}` first")
    if not s.get("ports"):
        raise GroveError(f"{adw_id} has no port claim", hint=f"run `inv ports.claim --adw-id {adw_id}` first")
    values = env_values(settings, adw_id, s["ports"])
    outcomes: dict = {}
    with report.step(name, "step", outcomes) as info:
        if name in FILE_STEPS:
            info["outcome"], info["detail"], written = FILE_STEPS[name](settings, path, values)
            from . import worktree

            worktree.hide(settings, path, written)
        elif name == "install":
            info["outcome"], info["detail"] = install(settings, path)
        else:
            info["outcome"], info["detail"] = reset_db(settings, path, values, adw_id=adw_id)
    state.update(settings, adw_id, lambda st: st["steps"].update(outcomes))
    return {"adw_id": adw_id, "step": name, **outcomes[name], "detail": info["detail"], "at": time.time()}


def claude_hooks(settings: Settings, path: Path, report: Reporter, always: bool = False) -> None:
    """Give the worktree Grove's Claude Code hooks in its own .claude/settings.local.json when the
    project uses them (``always``: a worktree the create hook made), so a session there finds the
    WorktreeRemove hook at /exit even when the project settings are not committed (issue 22).
    Git-ignored through info/exclude. Never fails a setup: a broken file there is warned about."""
    from ..resources import claudehooks
    from . import agentrun, worktree

    if not (always or claudehooks.in_project(settings.repo)):
        return
    command = f"{agentrun.grove_command(portable=False)} {claudehooks.MARK}"
    try:
        if claudehooks.write_hooks(path / claudehooks.LOCAL, command, skip_if_seen=(path / claudehooks.PROJECT,)):
            worktree.exclude(settings, [f"/{claudehooks.LOCAL.as_posix()}"])
    except GroveError as exc:
        report.warn(f"Claude Code's hooks not written into {path / claudehooks.LOCAL}: {exc.message}")
