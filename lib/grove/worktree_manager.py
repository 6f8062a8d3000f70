"""The Worktree Manager seed's Python API, over the same state, locks and steps as the tasks.

An orchestrator and `inv` can be mixed freely: both read and write agents/<id>/adw_state.json.
Errors follow the seed: ``ValueError`` for bad input (a bad transition, a non-terminal cleanup
without ``force``), ``RuntimeError`` when git or a step fails. ``worktree_name`` is the adw_id.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from .ops import cleanup, queries
from .core import config, git, state
from .core.errors import BAD_INPUT, GroveError
from .core.models import (ConflictForecast, MergeSummary, SyncResult, WorktreeExecutionResult, WorktreeMetadata,
                     format_time, parse_time)
from .core.report import Reporter

T = TypeVar("T")
PathLike = Union[str, Path]
# What `update_worktree_status(..., **kwargs)` may set: the seed's editable fields. Identity fields
# (branch, path, base_branch ...) are Grove's records; letting a caller rewrite them would let a
# later cleanup act on a branch Grove never created (issue 10, defect 9).
UPDATABLE = ("agent_id", "task_name", "github_sub_issue", "assigned_at", "completed_at", "merged_at", "cleaned_at")


def _settings(project_root: Optional[PathLike], base_branch: Optional[str] = None) -> config.Settings:
    return config.load({"repo": project_root, "base_branch": base_branch})


def _seed_errors(action: Callable[[], T]) -> T:
    """GroveError becomes the seed's exceptions: ValueError for bad input, RuntimeError otherwise."""
    try:
        return action()
    except GroveError as exc:
        kind = ValueError if exc.code == BAD_INPUT else RuntimeError
        raise kind(_api_text(exc)) from exc


def _api_text(exc: GroveError) -> str:
    """The message, and its hint only when it speaks to a caller of the API: "pass --base NAME" or
    "run `grove doctor`" are for the command line (issue 21)."""
    import re

    if not exc.hint or re.search(r"(^|\s|`)--?[a-z]|`(inv|grove) |\b(inv|grove) [a-z]", exc.hint):
        return exc.message
    return f"{exc.message}\n  hint: {exc.hint}"


class BaseBranchMissing(ValueError, RuntimeError):
    """A base branch that exists neither locally nor on the remote.

    Grove calls it bad input (ValueError, exit 2 for `inv`); the seed's "Worktree Creation Failure"
    example catches it as ``RuntimeError`` ("e.g., base branch doesn't exist"). It is both, so
    either handler works.
    """


def _base_missing(settings: config.Settings) -> bool:
    base, remote = settings.base_branch, settings.remote
    refs = [f"refs/heads/{base}"] + ([f"refs/remotes/{remote}/{base}"] if remote else [])
    return all(git.rev(settings.repo, ref) is None for ref in refs)


def _meta(settings: config.Settings, data: dict) -> WorktreeMetadata:
    return WorktreeMetadata.from_dict(data, data.get("archive_file") or str(settings.state_path(data["adw_id"])))


def create_worktree_for_agent(epic_id: str, task_name: str, base_branch: Optional[str] = None,
                              project_root: Optional[PathLike] = None, *, adw_id: Optional[str] = None,
                              agent_id: Optional[str] = None, install: bool = True,
                              db: bool = True) -> WorktreeMetadata:
    """Set up an agent for ``task_name`` of ``epic_id``: the whole chain, as `inv setup --epic --task`.

    The branch is feature/<epic>/<task-slug>-<id>, unique even for the same task twice.
    ``base_branch=None`` takes the configuration (ADW_BASE_BRANCH, default main).
    """
    from .ops import chain
    from .core import ids

    settings = _seed_errors(lambda: _settings(project_root, base_branch))
    req = chain.Request(adw_id or ids.new_id(), base=settings.base_branch, epic_id=epic_id, task_name=task_name,
                        agent_id=agent_id, install=install, db=db)
    try:
        data = _seed_errors(lambda: chain.setup(settings, req, Reporter(quiet=True)))
    except ValueError as exc:
        if _base_missing(settings):
            raise BaseBranchMissing(str(exc)) from exc.__cause__
        raise
    return _meta(settings, data)


def list_worktrees(epic_id: Optional[str] = None, status: Optional[str] = None,
                   project_root: Optional[PathLike] = None) -> list[WorktreeMetadata]:
    """Agents, most recent first, optionally of one epic and/or one status."""
    settings = _seed_errors(lambda: _settings(project_root))
    rows = _seed_errors(lambda: queries.list_agents(settings, epic_id=epic_id, status=status))
    return [_meta(settings, r) for r in rows]


def get_worktree_metadata(worktree_name: str, project_root: Optional[PathLike] = None) -> Optional[WorktreeMetadata]:
    """One agent's metadata, or None when there is no such agent."""
    settings = _seed_errors(lambda: _settings(project_root))
    data = _seed_errors(lambda: state.load(settings, worktree_name))
    return _meta(settings, data) if data else None


def update_worktree_status(worktree_name: str, status: str, error_message: Optional[str] = None,
                           project_root: Optional[PathLike] = None, **kwargs: Any) -> None:
    """A validated, locked status change; the seed's editable fields (UPDATABLE) are recorded too.

    A naive datetime is UTC (the seed's own example passes ``datetime.utcnow()``).
    Any other keyword is a ValueError, before anything changes.
    """
    unknown = sorted(set(kwargs) - set(UPDATABLE))
    if unknown:
        raise ValueError(f"update_worktree_status: cannot set {', '.join(unknown)}; "
                         f"the fields it takes are: {', '.join(UPDATABLE)}")
    extra = {key: _field_value(key, value) for key, value in kwargs.items()}
    settings = _seed_errors(lambda: _settings(project_root))
    _seed_errors(lambda: state.set_status(settings, worktree_name, status, by=extra.get("agent_id"),
                                          error=error_message, facts=True, **extra))


def _field_value(key: str, value: Any) -> Any:
    """A kwarg of update_worktree_status as stored, or ValueError before anything changes."""
    if value is None:
        return None
    if key.endswith("_at"):
        if isinstance(value, datetime):
            return format_time(value)
        if isinstance(value, str):
            return format_time(parse_time(value))  # ValueError when it is not ISO 8601
        raise ValueError(f"update_worktree_status: {key} must be a datetime or an ISO 8601 string, not {value!r}")
    if key == "github_sub_issue":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"update_worktree_status: github_sub_issue must be an int, not {value!r}")
    if isinstance(value, str):
        return value
    raise ValueError(f"update_worktree_status: {key} must be a string, not {value!r}")


def cleanup_worktree(worktree_name: str, delete_branch: bool = False, force: bool = False,
                     project_root: Optional[PathLike] = None) -> None:
    """Remove a finished agent's worktree and archive its state (ValueError if unfinished without force)."""
    settings = _seed_errors(lambda: _settings(project_root))
    _seed_errors(lambda: cleanup.teardown(settings, worktree_name, delete_branch=delete_branch, force=force))


def cleanup_epic_worktrees(epic_id: str, delete_branches: bool = False, project_root: Optional[PathLike] = None) -> int:
    """Clean every finished agent of ``epic_id``; returns how many were cleaned."""
    settings = _seed_errors(lambda: _settings(project_root))
    return _seed_errors(lambda: cleanup.cleanup_epic(settings, epic_id, delete_branches=delete_branches))["count"]


def get_all_git_worktrees(project_root: Optional[PathLike] = None) -> list[dict]:
    """What git itself knows (path, branch, head, locked, prunable), bypassing Grove's state."""
    settings = _seed_errors(lambda: _settings(project_root))
    return _seed_errors(lambda: git.worktrees(settings.repo))


def cleanup_abandoned_worktrees(max_age_days: float = 7, project_root: Optional[PathLike] = None) -> int:
    """Remove unfinished agents idle for ``max_age_days``; their branches stay. Returns the count."""
    settings = _seed_errors(lambda: _settings(project_root))
    return len(_seed_errors(lambda: cleanup.gc(settings, max_age_days))["removed"])


def list_archived_worktrees(epic_id: Optional[str] = None,
                            project_root: Optional[PathLike] = None) -> list[WorktreeMetadata]:
    """Archived (cleaned) agents, most recent first."""
    settings = _seed_errors(lambda: _settings(project_root))
    rows = _seed_errors(lambda: queries.list_agents(settings, epic_id=epic_id, archived=True))
    return [_meta(settings, r) for r in rows]


def merge_worktrees(worktree_names: Optional[list[str]] = None, *, epic_id: Optional[str] = None,
                    all_completed: bool = False, base_branch: Optional[str] = None, strategy: Optional[str] = None,
                    validate: Optional[str] = None, push: bool = False, cleanup: bool = False,
                    dry_run: bool = False, batch: Optional[bool] = None,
                    project_root: Optional[PathLike] = None) -> MergeSummary:
    """The merge queue, as `inv merge`: named agents in order, or an epic's / all completed agents.

    ``batch=None`` takes ADW_MERGE_MODE; True validates the whole queue once and bisects on failure.
    Returns a MergeSummary whatever the outcomes; raises only when nothing was merged.
    Problems after the base moved (a status or a cleanup) are in ``summary.errors``.
    """
    from .ops import merge as merging

    mode = None if batch is None else ("batch" if batch else "sequential")
    settings = _seed_errors(lambda: config.load({"repo": project_root, "base_branch": base_branch,
                                                 "merge_strategy": strategy, "merge_mode": mode}))

    def run() -> dict:
        queue, skipped = merging.select(settings, list(worktree_names or []), epic_id, all_completed)
        plan = merging.Plan(base=settings.base_branch, strategy=settings.merge_strategy,
                            validate=settings.merge_validate if validate is None else validate,
                            push=push, dry_run=dry_run, queue=queue, skipped=skipped,
                            batch=settings.merge_mode == "batch")
        return merging.run(settings, plan, cleanup=cleanup, report=Reporter(quiet=True))

    return MergeSummary.from_dict(_seed_errors(run))


def execute_in_worktrees(worktree_names: Sequence[str], argv: Sequence[str], jobs: Optional[int] = None,
                         timeout: Optional[float] = None, *,
                         project_root: Optional[PathLike] = None) -> list[WorktreeExecutionResult]:
    """Run ``argv`` (no shell) in each named agent's worktree, ``jobs`` at a time, as `inv exec`.

    Each run's status goes in_progress, then completed or failed; its output is in the result's
    ``log``. A run past ``timeout`` seconds has its whole process tree stopped (``timed_out``).
    KeyboardInterrupt stops every run, records them as failed, and is raised again.
    """
    from .ops import execute

    settings = _seed_errors(lambda: _settings(project_root))
    outcome = _seed_errors(lambda: execute.execute(settings, list(worktree_names), list(argv), jobs=jobs,
                                                   timeout=timeout))
    if outcome.interrupted:
        raise KeyboardInterrupt
    return [WorktreeExecutionResult.from_dict(r) for r in outcome.to_dict()["results"]]


def sync_worktree(worktree_name: str, strategy: str = "merge", fetch: bool = True,
                  project_root: Optional[PathLike] = None) -> SyncResult:
    """Bring the base's new commits into the agent's branch, in its worktree, as `inv sync`.

    A conflict is a result (``outcome == "conflict"``, status ``conflict``), not an exception;
    uncommitted changes are a RuntimeError with nothing touched.
    """
    from .ops import sync as syncing

    settings = _seed_errors(lambda: _settings(project_root))
    return SyncResult.from_dict(_seed_errors(lambda: syncing.sync(settings, worktree_name, strategy=strategy,
                                                                  fetch=fetch)))


def forecast_conflicts(epic_id: Optional[str] = None, base_branch: Optional[str] = None,
                       project_root: Optional[PathLike] = None) -> ConflictForecast:
    """Which pairs of completed branches would conflict, and in which files (`inv conflicts`)."""
    from .ops import conflicts

    settings = _seed_errors(lambda: _settings(project_root, base_branch))
    return ConflictForecast.from_dict(_seed_errors(lambda: conflicts.forecast(settings, epic=epic_id)))
