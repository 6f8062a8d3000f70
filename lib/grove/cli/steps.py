"""The setup chain one step at a time, for CI jobs that run it as separate tasks."""

from __future__ import annotations

from invoke import task

from .agents import print_ready
from .common import ID, JSON, REPO, emit, guard, load_settings, one, reporter


# ---------------------------------------------------------------------------------------------
# Single steps, for CI jobs that run the chain one step at a time


def _step(c, adw_id, repo, name):
    """Run one chain step on an existing agent and record its outcome in the state."""
    from ..ops import steps

    return steps.run_step(load_settings(c, repo), one(adw_id), name, reporter())


@task(help={"base": "base branch (default ADW_BASE_BRANCH)", "repo": REPO, "json": JSON})
@guard
def git_fetch(c, base=None, repo=None, json=False):
    """Fetch the base branch from the remote under the repo lock; print the commit it resolves to."""
    from ..ops import worktree

    settings = load_settings(c, repo)
    commit, where = worktree.resolve_base(settings, base or settings.base_branch, True, reporter())
    emit({"base": base or settings.base_branch, "commit": commit, "from": where}, json,
          lambda d: print(f"{d['from']} {d['commit']}"))


@task(help={"adw_id": ID, "branch": "branch name (default adw/<id>)", "base": "base branch", "fetch":
            "fetch first; --no-fetch uses the local base", "repo": REPO, "json": JSON})
@guard
def worktree_add(c, adw_id=None, branch=None, base=None, fetch=True, repo=None, json=False):
    """Create the agent's worktree and state (claims its ports too): the git half of setup."""
    from ..ops import chain

    req = chain.Request(one(adw_id), branch=branch, base=base, fetch=fetch, files=False, install=False, db=False)
    s = chain.setup(load_settings(c, repo, base_branch=base), req, reporter())
    emit(s, json, print_ready)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def ports_claim(c, adw_id=None, repo=None, json=False):
    """Claim a port slot for an agent (its own if it has one) and record it in its state."""
    from ..ops import steps

    result = steps.claim_ports(load_settings(c, repo), one(adw_id))
    emit(result, json, lambda d: print(f"slot {d['slot']}: " + " ".join(f"{k}={v}" for k, v in d["ports"].items())))


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def ports_release(c, adw_id=None, repo=None, json=False):
    """Release an agent's port claim."""
    from ..resources import ports

    freed = ports.release(load_settings(c, repo), one(adw_id))
    emit({"adw_id": adw_id, "freed_slots": freed}, json, lambda d: print(f"freed slots: {d['freed_slots']}"))


@task(help={"repo": REPO, "json": JSON, "all": "every lease on the machine, of every repository (issue 23)"})
@guard
def ports_show(c, repo=None, json=False, all=False):
    """Show the port leases: which agent holds which slot and ports."""
    from ..ops import steps

    rows = steps.registry_rows(load_settings(c, repo), everywhere=all)
    emit(rows, json, lambda d: [print(f"slot {r['slot']:>3}  {r['adw_id']:<20} "
                                       + " ".join(f"{k}={v}" for k, v in r["ports"].items())
                                       + (f"  {r['checkout']}" if all else "")
                                       + (f"  (stale: {r['stale']})" if r["stale"] else "")) for r in d])


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def env_ports(c, adw_id=None, repo=None, json=False):
    """Write the agent's .ports.env from its claimed ports."""
    emit(_step(c, adw_id, repo, "ports_env"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def env_merge(c, adw_id=None, repo=None, json=False):
    """Merge the main checkout's env files into the worktree, with the agent's ports laid over them."""
    emit(_step(c, adw_id, repo, "env"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def env_repoint(c, adw_id=None, repo=None, json=False):
    """Repoint paths in the JSON config files (.mcp.json ...) at the worktree."""
    emit(_step(c, adw_id, repo, "repoint"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def env_stage(c, adw_id=None, repo=None, json=False):
    """Stage your own edits of repointed configs in committable form (worktree paths put back), then commit."""
    from ..resources import hidden

    result = hidden.stage_configs(load_settings(c, repo), one(adw_id))
    emit(result, json, lambda d: print(f"staged: {', '.join(d['staged']) or 'nothing'}"
                                        + (" (now run git commit)" if d["staged"] else "")))


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def deps_install(c, adw_id=None, repo=None, json=False):
    """Install the worktree's dependencies: uv sync --all-extras, bun install (or npm ci)."""
    emit(_step(c, adw_id, repo, "install"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@guard
def db_reset(c, adw_id=None, repo=None, json=False):
    """Recreate the agent's Postgres database from the template (with ADW_DB_URL), then run ADW_DB_RESET."""
    emit(_step(c, adw_id, repo, "db"), json, lambda d: None)


@task(help={"epic": "only this epic's archived agents", "repo": REPO, "json": JSON})
@guard
def state_archived(c, epic=None, repo=None, json=False):
    """List archived (cleaned) agent states from agents/.archive/, most recent first."""
    from ..ops import queries

    rows = queries.list_agents(load_settings(c, repo), epic_id=epic, archived=True)
    emit(rows, json, queries.print_table)
