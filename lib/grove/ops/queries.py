"""Read-only views: the agents Grove knows, joined with what git knows, in one git call."""

from __future__ import annotations

import os

from ..core import git, state
from ..core.config import Settings
from ..core.errors import bad_input


def list_agents(settings: Settings, epic_id: str | None = None, status: str | None = None,
                archived: bool = False) -> list[dict]:
    """States (or archived states), filtered, most recent first, each with ``git`` and ``exists``."""
    if status is not None:
        from ..core.models import STATUSES  # on demand, as in state.py: `inv list` stays lean

        if status not in STATUSES:
            # A typo (`in-progress`) must not read as "no agents": the seed names the valid statuses.
            raise bad_input(f"unknown status {status!r}", f"one of: {', '.join(STATUSES)}")
    if archived:
        rows = state.archived(settings)
    else:
        known = git.linked_worktree_paths(settings.repo)
        if known is None:
            known = {os.path.realpath(w["path"]) for w in git.worktrees(settings.repo)}
        rows = []
        for adw_id in state.all_ids(settings):
            s = state.load(settings, adw_id)
            if s is None:  # torn down by another process since all_ids() listed it
                continue
            real = os.path.realpath(s["worktree_path"])
            rows.append(dict(s, git=real in known, exists=os.path.isdir(real)))
    rows = [r for r in rows if (epic_id is None or r.get("epic_id") == epic_id)
            and (status is None or r.get("status") == status)]
    return sorted(rows, key=lambda r: (r.get("created_at") or "", r.get("created_ns") or 0, r["adw_id"]),
                  reverse=True)


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("no agents")
        return
    print(f"{'ADW_ID':<12} {'STATUS':<12} {'BRANCH':<36} {'PORTS':<12} PATH")
    for r in rows:
        ports = f"{r.get('backend_port')}/{r.get('frontend_port')}"
        flag = "" if r.get("git", True) and r.get("exists", True) else "  (!) run inv doctor"
        print(f"{r['adw_id']:<12} {r['status']:<12} {r['branch']:<36} {ports:<12} {r['worktree_path']}{flag}")
