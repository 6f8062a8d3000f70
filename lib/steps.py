"""Single chain steps on an existing agent, for CI jobs that run the chain one task at a time."""

from __future__ import annotations

import time

from . import chain, ports, state
from .config import Settings
from .errors import GroveError
from .report import Reporter


def claim_ports(settings: Settings, adw_id: str) -> dict:
    """Claim (or re-find) the agent's slot and record it in its state when it has one."""
    from . import ids

    ids.check_id(adw_id)
    claim = ports.claim(settings, adw_id)
    if settings.state_path(adw_id).exists():
        state.update(settings, adw_id, lambda s: chain._record_claim(s, claim))
    return {"adw_id": adw_id, "slot": claim.slot, "ports": claim.ports, "reused": claim.reused}


def registry_rows(settings: Settings) -> list[dict]:
    return [{"slot": int(slot), "adw_id": c.get("adw_id"), "pid": c.get("pid"), "claimed_at": c.get("claimed_at"),
             "ports": ports.ports_for(settings, int(slot))}
            for slot, c in sorted(ports.read_registry(settings).items(), key=lambda item: int(item[0]))]


def run_step(settings: Settings, adw_id: str, name: str, report: Reporter) -> dict:
    """Run one of ports_env, env, repoint, install, db for ``adw_id`` and record it in the state."""
    s = state.require(settings, adw_id)
    path = settings.worktree_path(adw_id)
    if not path.is_dir():
        raise GroveError(f"{adw_id} has no worktree at {path}", hint=f"run `inv worktree.add --adw-id {adw_id}` first")
    if not s.get("ports"):
        raise GroveError(f"{adw_id} has no port claim", hint=f"run `inv ports.claim --adw-id {adw_id}` first")
    values = ports.env_lines(s["ports"])
    outcomes: dict = {}
    with report.step(name, "step", outcomes) as info:
        if name in chain.FILE_STEPS:
            info["outcome"], info["detail"], written = chain.FILE_STEPS[name](settings, path, values)
            from . import worktree

            worktree.hide(settings, path, written)
        elif name == "install":
            info["outcome"], info["detail"] = chain.install(settings, path)
        else:
            info["outcome"], info["detail"] = chain.reset_db(settings, path, values)
    state.update(settings, adw_id, lambda st: st["steps"].update(outcomes))
    return {"adw_id": adw_id, "step": name, **outcomes[name], "detail": info["detail"], "at": time.time()}
