"""What the setup chain's steps share with the single-step tasks (for CI jobs that run the chain one
task at a time on an existing agent): the env values, the port claim, one resource's prepare, and
Claude Code's hooks. The steps themselves are the resources of lib/grove/resources/table.py."""

from __future__ import annotations

import time
from pathlib import Path

from ..resources import generated, ports, table
from ..resources.shape import Agent
from ..core import state
from ..core.config import Settings
from ..core.errors import GroveError
from ..core.report import Reporter


# What .ports.env and every merged env file get; it lives with the files Grove generates, which the
# archive also needs to recognise (lib/grove/resources/generated.py, issue 20).
env_values = generated.env_values


def write_files(settings: Settings, adw_id: str, path: Path, values: dict[str, str],
                resources: tuple[table.Resource, ...] | None = None) -> tuple[dict[str, str], list[str]]:
    """Prepare the resources that write files (all of them by default) outside the chain: the
    merge's integration worktree, a sync's re-apply, the pool. Returns ({name: outcome}, the
    files written), for the caller to hide."""
    outcomes, written = {}, []
    for resource in table.FILES if resources is None else resources:
        assert resource.prepare is not None
        outcomes[resource.name], _, files = resource.prepare(Agent(settings, adw_id, path, values))
        written.extend(files)
    return outcomes, written


def files_written(settings: Settings, path: Path, written: list[str], report: Reporter,
                  hid: tuple[frozenset[str], list[str]] | None = None) -> None:
    """Once the file resources ran (setup, adopt): hide what they wrote from `git add -A` (before a
    long install, so a failure there never salvages a copy of the env into a ref), and give
    Claude Code its hooks. ``hid``: a pooled worktree's files were hidden by its fill, which
    covered these paths and left those visible (pool._hiding_still_true); a directory a resource
    made is new, so never tracked, and hide leaves it visible anyway."""
    from . import worktree

    if hid is not None and all(rel in hid[0] or (path / rel).is_dir() for rel in written):
        visible = [rel for rel in hid[1] if rel in written]
    else:
        visible = worktree.hide(settings, path, written)
    for name in visible:
        report.warn(f"{name} is not git-ignored: `git add -A` in {path} would commit its copy (ports, secrets); "
                    f"add it to .gitignore")
    claude_hooks(settings, path, report)  # a session in this worktree must see Grove's hooks (issue 22)


def record_claim(s: dict, claim: ports.Claim) -> None:
    s.update(slot=claim.slot, backend_port=claim.ports["BACKEND_PORT"],
             frontend_port=claim.ports["FRONTEND_PORT"], ports=dict(claim.ports))
    if s["status"] == "failed":  # a setup re-run after a kept failure starts over as created
        state.apply_status(s, "created")


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
    resource = table.BY_NAME[name]
    assert resource.prepare is not None  # the CLI offers only the prepared steps
    outcomes: dict = {}
    with report.step(name, "step", outcomes) as info:
        # Asked for by name: done again, the database reset too (``reset``), whatever an earlier run did.
        info["outcome"], info["detail"], written = resource.prepare(Agent(settings, adw_id, path, values, reset=True))
        if resource.writes_files:
            from . import worktree

            worktree.hide(settings, path, written)
    state.update(settings, adw_id, lambda st: st["steps"].update(outcomes))
    return {"adw_id": adw_id, "step": name, **outcomes[name], "detail": info["detail"], "at": time.time()}


def claude_hooks(settings: Settings, path: Path, report: Reporter, always: bool = False) -> None:
    """Give the worktree Grove's Claude Code hooks in its own .claude/settings.local.json when the
    project uses them (``always``: a worktree the create hook made), so a session there finds the
    WorktreeRemove hook at /exit even when the project settings are not committed (issue 22).
    Git-ignored through info/exclude. Never fails a setup: a broken file there is warned about."""
    from ..resources import claudehooks

    if not (always or claudehooks.in_project(settings.repo)):
        return
    from . import agentrun, worktree

    command = f"{agentrun.grove_command(portable=False)} {claudehooks.MARK}"
    try:
        if claudehooks.write_hooks(path / claudehooks.LOCAL, command, skip_if_seen=(path / claudehooks.PROJECT,)):
            worktree.exclude(settings, [f"/{claudehooks.LOCAL.as_posix()}"])
    except GroveError as exc:
        report.warn(f"Claude Code's hooks not written into {path / claudehooks.LOCAL}: {exc.message}")
