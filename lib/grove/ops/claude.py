"""Claude Code's WorktreeCreate and WorktreeRemove hooks, served by Grove (issue 22, item 1).

Measured with the real CLI (DESIGN.md pitfalls, issue 22): WorktreeCreate's payload has ``name``
and ``cwd`` (the repository); the CLI takes the last non-empty stdout line as the worktree path, and
a path that does not exist makes `claude -p` hang, so only a directory that exists is ever printed.
WorktreeRemove's payload has ``worktree_path`` and runs inside the worktree; it fires only when an
interactive session exits cleanly, and the CLI reads it from the settings the worktree sees.

Where the hooks live: `grove init --claude-code` merges them into the project's
``.claude/settings.json`` (commit and push it to share them), and every worktree Grove makes while
the project uses them (and every one the create hook makes) gets them in its own
``.claude/settings.local.json`` (git-ignored through info/exclude; ops/steps.py ``claude_hooks``),
so the remove hook fires even when the project settings are not committed, or not on the base yet.

Remove is Grove's teardown with salvage: uncommitted work goes to refs/grove-salvage/<id>/..., the
branch is kept (never deleted here), so unmerged commits stay on it; the state is archived.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core import git, ids, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.report import Reporter
from ..resources import claudehooks
from ..safety import owned
from . import agentrun, chain, cleanup, steps


def parse(text: str) -> dict:
    """The hook's stdin: one JSON object with ``hook_event_name`` (exit 2 otherwise)."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise bad_input("the hook's stdin is not JSON", "Claude Code sends a JSON object; see docs/agents.md") from None
    event = payload.get("hook_event_name") if isinstance(payload, dict) else None
    if event not in claudehooks.EVENTS:
        raise bad_input(f"unsupported hook event {event!r}",
                        "register `grove hook claude-code` for WorktreeCreate and WorktreeRemove only")
    return payload


def repo_of(payload: dict) -> str | None:
    """Where the repository is: the payload's cwd (the repo for create, the worktree for remove)."""
    return payload.get("cwd") or os.environ.get("CLAUDE_PROJECT_DIR") or None


# -- WorktreeCreate --------------------------------------------------------------------------------

def create(settings: Settings, payload: dict, report: Reporter) -> Path:
    """Set up an agent for the session named ``name``; returns its worktree, which exists."""
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_input("WorktreeCreate without a name", "Claude Code always sends one; is this a real hook call?")
    adw_id = _id_for(settings, name)
    req = chain.Request(adw_id, agent_id="claude-code")
    s = chain.setup(settings, req, report)
    path = Path(s["worktree_path"])
    session = payload.get("session_id") or os.environ.get("CLAUDE_CODE_SESSION_ID")
    state.update(settings, adw_id, lambda st: st.update(claude_code={"name": name, "session_id": session}))
    steps.claude_hooks(settings, path, report, always=True)
    if not path.is_dir():  # never print a path that does not exist: `claude -p` hangs on one
        raise GroveError(f"setup of {adw_id} reported {path}, which does not exist", hint="see `grove doctor`")
    report.say(f"✓ claude-code worktree {name!r} is agent {adw_id}: {path}")
    return path


def _id_for(settings: Settings, name: str) -> str:
    """The agent id for a session name: the name made valid; the same agent again when a session of
    that name made it (a resumed session); else the first free ``-N`` (a collision)."""
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s is not None and (s.get("claude_code") or {}).get("name") == name:
            return adw_id
    wanted = ids.from_name(name)

    def taken(candidate: str) -> bool:
        # A branch of that name that Grove did not make for this id would make setup refuse (exit 2).
        branch = ids.default_branch(candidate)
        record = owned.owner(settings, "branch", branch)
        return git.branch_exists(settings.repo, branch) and (record or {}).get("adw_id") != candidate

    return ids.free_id(settings, wanted, taken)


# -- WorktreeRemove --------------------------------------------------------------------------------

def remove(settings: Settings, payload: dict, report: Reporter) -> dict:
    """Tear down the agent whose worktree is ``worktree_path``, salvaging first; the branch stays."""
    raw = payload.get("worktree_path") or payload.get("cwd")
    if not isinstance(raw, str) or not raw:
        raise bad_input("WorktreeRemove without a worktree_path")
    real = os.path.realpath(raw)
    adw_id = state.agent_at(settings, real)
    if adw_id is None:
        if _already_torn_down(settings, real):
            report.say(f"{raw} was torn down already")
            return {"worktree_path": raw, "adw_id": None, "already": True}
        raise GroveError(f"{raw} is not the worktree of a Grove agent: Grove leaves it alone",
                         hint=f"remove it yourself if you want it gone: git worktree remove {raw}")
    os.chdir(settings.repo)  # the hook runs inside the worktree it removes
    result = cleanup.teardown(settings, adw_id, force=True, salvage=True, delete_branch=False, report=report)
    ahead = _unmerged(settings, result.get("branch"))
    if ahead:
        report.say(f"branch {result['branch']} is kept with {ahead} unmerged commit(s): "
                   f"`grove setup --adw-id {adw_id}` brings the agent back on it, or merge it with git")
    return dict(result, unmerged_commits=ahead)


def _already_torn_down(settings: Settings, real: str) -> bool:
    """A second remove of the same worktree (the hook registered twice): its archive is there."""
    if os.path.exists(real):
        return False
    return any(os.path.realpath(a.get("worktree_path") or "") == real for a in state.archived(settings))


def _unmerged(settings: Settings, branch: str | None) -> int:
    if not branch or not git.branch_exists(settings.repo, branch):
        return 0
    base = git.base_ref(settings.repo, settings.remote, settings.base_branch)
    return len(git.git(settings.repo, "rev-list", f"{base}..refs/heads/{branch}").split()) if base else 0


# -- installing the hooks ----------------------------------------------------------------------------

def command(absolute: bool = False) -> str:
    """The hook command: `grove hook claude-code` when `grove` on PATH is this Grove (portable, for a
    committed settings file), else this Grove's `grove` by its absolute path."""
    return f"{agentrun.grove_command(portable=not absolute)} {claudehooks.MARK}"


def check_init(settings: Settings) -> None:
    """Exit 2 before `init` changes anything when the project settings cannot be merged into."""
    data = claudehooks.read_settings(settings.repo / claudehooks.PROJECT)
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict) or any(not isinstance(hooks.get(e, []), list) for e in claudehooks.EVENTS):
        raise bad_input(f"{settings.repo / claudehooks.PROJECT}: \"hooks\" is not an object of lists",
                        "fix the file, then run this again")


def init(settings: Settings) -> list[str]:
    """`grove init --claude-code`: the hooks in the project's .claude/settings.json (idempotent)."""
    target = settings.repo / claudehooks.PROJECT
    cmd = command()
    added = claudehooks.write_hooks(target, cmd)
    if not added:
        return [f"{claudehooks.PROJECT}: Grove's Claude Code hooks already present"]
    lines = [f"{claudehooks.PROJECT}: added {' and '.join(added)} hooks ({cmd})"]
    if not cmd.startswith("grove "):
        lines.append(f"{claudehooks.PROJECT}: `grove` is not on PATH, so the hook names this Grove by its "
                     "absolute path")
    lines.append(f"commit and push {claudehooks.PROJECT} to share the hooks; each worktree Grove makes also gets "
                 f"them in its own {claudehooks.LOCAL}")
    return lines

