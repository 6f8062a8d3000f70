"""The Worktree Manager seed's Python API, over the same state, locks and steps as the tasks.

An orchestrator and `inv` can be mixed freely: both read and write agents/<id>/adw_state.json.
Errors follow the seed: ``ValueError`` for bad input (a bad transition, a non-terminal cleanup
without ``force``), ``RuntimeError`` when git or a step fails. ``worktree_name`` is the adw_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, TypeVar

from . import cleanup, config, git, queries, state
from .errors import BAD_INPUT, GroveError
from .report import Reporter

T = TypeVar("T")
_TIMES = ("created_at", "assigned_at", "completed_at", "merged_at", "cleaned_at")


@dataclass
class WorktreeMetadata:
    """One agent's worktree, with the seed's fields (a stdlib dataclass: no pydantic on `inv`'s path)."""

    name: str
    epic_id: Optional[str]
    task_name: Optional[str]
    path: Path
    branch: str
    base_branch: str
    agent_id: Optional[str]
    status: str
    created_at: datetime
    assigned_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    merged_at: Optional[datetime] = None
    cleaned_at: Optional[datetime] = None
    commits: list[str] = field(default_factory=list)
    error_message: Optional[str] = None
    github_sub_issue: Optional[int] = None
    slot: Optional[int] = None
    backend_port: Optional[int] = None
    frontend_port: Optional[int] = None
    ports: dict = field(default_factory=dict)

    @classmethod
    def from_state(cls, data: dict, source: str = "state") -> "WorktreeMetadata":
        """Build from a state document; a missing or malformed field names the file and the field."""
        def need(key: str, kind: type):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"{source}: field {key!r} is missing or not a {kind.__name__}")
            return data[key]

        values = {"name": need("adw_id", str), "path": Path(need("worktree_path", str)), "branch": need("branch", str),
                  "base_branch": need("base_branch", str), "status": need("status", str)}
        if values["status"] not in state.STATUSES:
            raise ValueError(f"{source}: field 'status' has unknown value {values['status']!r}")
        for key in _TIMES:
            raw = data.get(key)
            if raw is not None and state.parse_time(raw) is None:
                raise ValueError(f"{source}: field {key!r} is not an ISO 8601 UTC time: {raw!r}")
            values[key] = datetime.fromtimestamp(state.parse_time(raw), timezone.utc) if raw else None
        if values["created_at"] is None:
            raise ValueError(f"{source}: field 'created_at' is missing")
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in data.items() if k in known and k not in values and k != "path"})
        return cls(**values)


def _settings(project_root: Optional[Path], base_branch: Optional[str] = None):
    return config.load({"repo": project_root, "base_branch": base_branch})


def _seed_errors(action: Callable[[], T]) -> T:
    """GroveError becomes the seed's exceptions: ValueError for bad input, RuntimeError otherwise."""
    try:
        return action()
    except GroveError as exc:
        kind = ValueError if exc.code == BAD_INPUT else RuntimeError
        raise kind(str(exc)) from exc


def _meta(settings, data: dict) -> WorktreeMetadata:
    return WorktreeMetadata.from_state(data, data.get("archive_file") or str(settings.state_path(data["adw_id"])))


def create_worktree_for_agent(epic_id: str, task_name: str, base_branch: str = "main",
                              project_root: Optional[Path] = None, *, adw_id: Optional[str] = None,
                              install: bool = True, db: bool = True) -> WorktreeMetadata:
    """Set up an agent for ``task_name`` of ``epic_id``: the whole chain, as `inv setup --epic --task`.

    The branch is feature/<epic>/<task-slug>-<id>, unique even for the same task twice.
    """
    from . import chain, ids

    settings = _seed_errors(lambda: _settings(project_root, base_branch))
    req = chain.Request(adw_id or ids.new_id(), base=base_branch, epic_id=epic_id, task_name=task_name,
                        install=install, db=db)
    return _meta(settings, _seed_errors(lambda: chain.setup(settings, req, Reporter(quiet=True))))


def list_worktrees(epic_id: Optional[str] = None, status: Optional[str] = None,
                   project_root: Optional[Path] = None) -> list[WorktreeMetadata]:
    """Agents, most recent first, optionally of one epic and/or one status."""
    settings = _seed_errors(lambda: _settings(project_root))
    rows = _seed_errors(lambda: queries.list_agents(settings, epic_id=epic_id, status=status))
    return [_meta(settings, r) for r in rows]


def get_worktree_metadata(worktree_name: str, project_root: Optional[Path] = None) -> Optional[WorktreeMetadata]:
    """One agent's metadata, or None when there is no such agent."""
    settings = _seed_errors(lambda: _settings(project_root))
    data = _seed_errors(lambda: state.load(settings, worktree_name))
    return _meta(settings, data) if data else None


def update_worktree_status(worktree_name: str, status: str, error_message: Optional[str] = None,
                           project_root: Optional[Path] = None, **kwargs) -> None:
    """A validated, locked status change; extra fields (agent_id, completed_at ...) are recorded too."""
    settings = _seed_errors(lambda: _settings(project_root))
    extra = {k: (v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, datetime) else v)
             for k, v in kwargs.items()}
    _seed_errors(lambda: state.set_status(settings, worktree_name, status, by=extra.get("agent_id"),
                                          error=error_message, **extra))


def cleanup_worktree(worktree_name: str, delete_branch: bool = False, force: bool = False,
                     project_root: Optional[Path] = None) -> None:
    """Remove a finished agent's worktree and archive its state (ValueError if unfinished without force)."""
    settings = _seed_errors(lambda: _settings(project_root))
    _seed_errors(lambda: cleanup.teardown(settings, worktree_name, delete_branch=delete_branch, force=force))


def cleanup_epic_worktrees(epic_id: str, delete_branches: bool = False, project_root: Optional[Path] = None) -> int:
    """Clean every finished agent of ``epic_id``; returns how many were cleaned."""
    settings = _seed_errors(lambda: _settings(project_root))
    return _seed_errors(lambda: cleanup.cleanup_epic(settings, epic_id, delete_branches=delete_branches))["count"]


def get_all_git_worktrees(project_root: Optional[Path] = None) -> list[dict]:
    """What git itself knows (path, branch, head, locked, prunable), bypassing Grove's state."""
    settings = _seed_errors(lambda: _settings(project_root))
    return _seed_errors(lambda: git.worktrees(settings.repo))


def cleanup_abandoned_worktrees(max_age_days: float = 7, project_root: Optional[Path] = None) -> int:
    """Remove unfinished agents idle for ``max_age_days``; their branches stay. Returns the count."""
    settings = _seed_errors(lambda: _settings(project_root))
    return len(_seed_errors(lambda: cleanup.gc(settings, max_age_days))["removed"])


def list_archived_worktrees(epic_id: Optional[str] = None,
                            project_root: Optional[Path] = None) -> list[WorktreeMetadata]:
    """Archived (cleaned) agents, most recent first."""
    settings = _seed_errors(lambda: _settings(project_root))
    rows = _seed_errors(lambda: queries.list_agents(settings, epic_id=epic_id, archived=True))
    return [_meta(settings, r) for r in rows]
