"""Claude Code's WorktreeCreate and WorktreeRemove hooks, served by Grove (issue 22, item 1).

Measured with the real CLI (DESIGN.md pitfalls, issue 22): WorktreeCreate's payload has ``name``
and ``cwd`` (the repository); the CLI takes the last non-empty stdout line as the worktree path, and
a path that does not exist makes `claude -p` hang, so only a directory that exists is ever printed.
WorktreeRemove's payload has ``worktree_path`` and runs inside the worktree; it fires only when an
interactive session exits cleanly, and the CLI reads it from the settings the worktree sees.

Where the hooks live: `grove init --claude-code` merges them into the project's
``.claude/settings.json`` (commit and push it to share them), and every worktree the create hook
makes gets them in its own ``.claude/settings.local.json`` (git-ignored through info/exclude), so
the remove hook fires even when the project settings are not committed, or not on the base yet.

Remove is Grove's teardown with salvage: uncommitted work goes to refs/grove-salvage/<id>/..., the
branch is kept (never deleted here), so unmerged commits stay on it; the state is archived.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core import git, ids, locks, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.report import Reporter
from ..safety import owned
from . import agentrun, chain, cleanup, worktree

EVENTS = ("WorktreeCreate", "WorktreeRemove")
MARK = "hook claude-code"  # how Grove recognises its own hook entries when merging settings
LOCAL = Path(".claude") / "settings.local.json"
PROJECT = Path(".claude") / "settings.json"
HOOK_TIMEOUT = 900  # seconds Claude Code gives the hook: a first setup installs dependencies


def parse(text: str) -> dict:
    """The hook's stdin: one JSON object with ``hook_event_name`` (exit 2 otherwise)."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise bad_input("the hook's stdin is not JSON", "Claude Code sends a JSON object; see docs/agents.md") from None
    if not isinstance(payload, dict) or payload.get("hook_event_name") not in EVENTS:
        raise bad_input(f"unsupported hook event {payload.get('hook_event_name') if isinstance(payload, dict) else None!r}",
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
    write_hooks(path / LOCAL, command(absolute=True), skip_if_seen=(path / PROJECT,))
    worktree.exclude(settings, [f"/{LOCAL.as_posix()}"])
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
    adw_id = _agent_at(settings, real)
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


def _agent_at(settings: Settings, real: str) -> str | None:
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s is not None and os.path.realpath(s["worktree_path"]) == real:
            return adw_id
    return None


def _already_torn_down(settings: Settings, real: str) -> bool:
    """A second remove of the same worktree (the hook registered twice): its archive is there."""
    if os.path.exists(real):
        return False
    return any(os.path.realpath(a.get("worktree_path") or "") == real for a in state.archived(settings))


def _unmerged(settings: Settings, branch: str | None) -> int:
    if not branch or not git.branch_exists(settings.repo, branch):
        return 0
    base = cleanup._base_ref(settings, None)
    return len(git.git(settings.repo, "rev-list", f"{base}..refs/heads/{branch}").split())


# -- installing the hooks ----------------------------------------------------------------------------

def command(absolute: bool = False) -> str:
    """The hook command: `grove hook claude-code` when `grove` on PATH is this Grove (portable, for a
    committed settings file), else this Grove's `grove` by its absolute path."""
    return f"{agentrun.grove_command(portable=not absolute)} {MARK}"


def _ours(group: object) -> bool:
    return isinstance(group, dict) and any(isinstance(h, dict) and MARK in str(h.get("command", ""))
                                           for h in group.get("hooks") or [])


def write_hooks(target: Path, cmd: str, skip_if_seen: tuple[Path, ...] = ()) -> list[str]:
    """Merge Grove's two hooks into the Claude Code settings file ``target``, keeping everything else
    in it; an event that already has Grove's hook (here or in ``skip_if_seen``) is left as it is.
    Returns the events added (empty: nothing changed)."""
    data = _read_settings(target)
    seen = [_read_settings(p) for p in skip_if_seen if p.exists()]
    hooks = data.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise bad_input(f"{target}: \"hooks\" is not an object", "fix the file, then run this again")
    added = []
    for event in EVENTS:
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise bad_input(f"{target}: hooks.{event} is not a list", "fix the file, then run this again")
        if any(_ours(g) for g in groups) or any(_ours(g) for d in seen for g in (d.get("hooks") or {}).get(event) or []):
            continue
        groups.append({"hooks": [{"type": "command", "command": cmd, "timeout": HOOK_TIMEOUT}]})
        added.append(event)
    if added:
        target.parent.mkdir(parents=True, exist_ok=True)
        locks.atomic_write_text(target, json.dumps(data, indent=2) + "\n")
    return added


def _read_settings(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise bad_input(f"{path} is not valid JSON", "fix it (Claude Code would not read it either), then run this again") from None
    if not isinstance(data, dict):
        raise bad_input(f"{path} does not hold a JSON object")
    return data


def check_init(settings: Settings) -> None:
    """Exit 2 before `init` changes anything when the project settings cannot be merged into."""
    data = _read_settings(settings.repo / PROJECT)
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict) or any(not isinstance(hooks.get(e, []), list) for e in EVENTS):
        raise bad_input(f"{settings.repo / PROJECT}: \"hooks\" is not an object of lists",
                        "fix the file, then run this again")


def init(settings: Settings) -> list[str]:
    """`grove init --claude-code`: the hooks in the project's .claude/settings.json (idempotent)."""
    target = settings.repo / PROJECT
    cmd = command()
    added = write_hooks(target, cmd)
    if not added:
        return [f"{PROJECT}: Grove's Claude Code hooks already present"]
    lines = [f"{PROJECT}: added {' and '.join(added)} hooks ({cmd})"]
    if not cmd.startswith("grove "):
        lines.append(f"{PROJECT}: `grove` is not on PATH, so the hook names this Grove by its absolute path")
    lines.append(f"commit and push {PROJECT} to share the hooks; each worktree Grove makes for a session "
                 f"also gets them in its {LOCAL}")
    return lines

