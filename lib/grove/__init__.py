"""Grove: isolated, ready-to-run git worktrees for many coding agents at once.

``from grove import create_worktree_for_agent, list_worktrees, ...`` gives the seed's API. The names
are loaded on first use, so `grove --list` and `import grove.cli.tasks` stay lean.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_API = {
    "worktree_manager": (
        "create_worktree_for_agent", "list_worktrees", "get_worktree_metadata", "update_worktree_status",
        "cleanup_worktree", "cleanup_epic_worktrees", "get_all_git_worktrees", "cleanup_abandoned_worktrees",
        "list_archived_worktrees", "merge_worktrees", "execute_in_worktrees", "sync_worktree",
        "forecast_conflicts",
    ),
    "models": ("WorktreeMetadata", "MergeResult", "MergeSummary", "WorktreeExecutionResult", "SyncResult",
               "ConflictForecast", "ConflictPair"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = ["__version__", *_WHERE]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .models import (ConflictForecast, ConflictPair, MergeResult, MergeSummary,  # noqa: F401
                         SyncResult, WorktreeExecutionResult, WorktreeMetadata)
    from .worktree_manager import (cleanup_abandoned_worktrees, cleanup_epic_worktrees,  # noqa: F401
                                   cleanup_worktree, create_worktree_for_agent, execute_in_worktrees,
                                   forecast_conflicts, get_all_git_worktrees, get_worktree_metadata,
                                   list_archived_worktrees, list_worktrees, merge_worktrees, sync_worktree,
                                   update_worktree_status)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'grove' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
