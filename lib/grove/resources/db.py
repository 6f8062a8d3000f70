"""The database reset: the repo's own script, run in the worktree with the agent's ports."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import proc


def reset(worktree: Path, script: str, env: dict[str, str], timeout: float) -> bool:
    """Run ``script`` (relative to the worktree) with cwd at the worktree; False when it is absent."""
    path = worktree / script
    if not path.is_file():
        return False
    argv = [str(path)] if os.access(path, os.X_OK) else ["bash", str(path)]
    proc.run(argv, cwd=worktree, env=env, timeout=timeout, what=f"database reset ({script})")
    return True
