"""Grove's files hidden with skip-worktree: which they are, what Grove's own rewrite of each holds,
and an agent's edit over it (which `git status` does not show).

Setup rewrites tracked configs (repointed paths, ports laid over a tracked .env) and hides them, so
no absolute path is committed. An agent's deliberate edit of such a file is its work: salvage,
teardown and sync count it as uncommitted, and `grove env.stage` makes it committable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core import git, ids, locks, proc, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from . import envfiles, ports, repoint


def hidden_files(wt: Path) -> list[str]:
    """Tracked files marked skip-worktree in this worktree's index (`git ls-files -v`: 'S')."""
    raw = git.git(wt, "ls-files", "-v", "-z")
    return sorted(entry[2:] for entry in raw.split("\0") if entry[:2] == "S ")


def edited_hidden(settings: Settings, s: dict, wt: Path) -> list[str]:
    """Hidden (skip-worktree) files whose content is more than Grove's own rewrite: an agent's edit,
    which `git status` does not show. Salvage and teardown count them as uncommitted work."""
    return [name for name in hidden_files(wt)
            if not _same(settings, name, _working_bytes(wt, name), _expected(settings, s, wt, name))]


def _same(settings: Settings, name: str, working: bytes | None, expected: bytes | None) -> bool:
    """A repointed JSON config is compared as data: `inv env.stage` may have re-formatted it."""
    if working == expected:
        return True
    if name in settings.path_configs and working is not None and expected is not None:
        try:
            return json.loads(working) == json.loads(expected)
        except ValueError:
            return False
    return False


def _working_bytes(wt: Path, name: str) -> bytes | None:
    try:
        return (wt / name).read_bytes()
    except OSError:
        return None


def _committed(wt: Path, name: str, rev: str = "HEAD") -> bytes | None:
    try:
        return _git_bytes(wt, "cat-file", "blob", f"{rev}:{name}")
    except GroveError:
        return None


def _git_bytes(wt: Path, *args: str, data: bytes | None = None) -> bytes:
    """Git with bytes in and out: file contents compare byte for byte (CRLF and all)."""
    import subprocess

    out = subprocess.run(["git", "-C", str(wt), *args], input=data, capture_output=True, env=proc.clean_env(),
                         check=False)
    if out.returncode != 0:
        raise GroveError(f"git {args[0]} failed: {proc.tail(out.stderr.decode(errors='replace'))}")
    return out.stdout


def _expected(settings: Settings, s: dict, wt: Path, name: str) -> bytes | None:
    """What the working file of a hidden ``name`` holds when only Grove changed it."""
    committed = _committed(wt, name)
    if committed is None:
        return None
    values = ports.env_lines(s.get("ports") or {}) if s.get("ports") else {}
    text = committed.decode("utf-8", errors="replace")
    if name in settings.path_configs:
        try:
            data = json.loads(text)
        except ValueError:
            return committed  # not JSON: the repoint would have refused it, so it is unchanged
        new, _ = repoint.repoint_data(data, settings.repo, settings.trees_path, wt)
        return committed if new == data else repoint.as_written(text, data, new).encode()
    if Path(name).name == envfiles.PORTS_FILE and values:
        return envfiles.ports_text(values).encode()
    if name in settings.env_files and values:
        return envfiles.lay_over(text, values, wt / name).encode()
    return committed


# -- an agent's deliberate edit of a hidden config -----------------------------------------------


def stage_configs(settings: Settings, adw_id: str) -> dict:
    """Stage an agent's own edits of its repointed configs in committable form (paths back as committed).

    The working file keeps the worktree's paths and stays hidden; the index gets the same content with
    every worktree path put back the way the committed file wrote it (or as ./relative). `git commit`
    then records the edit, and no absolute path rides into the commit.
    """
    ids.check_id(adw_id)
    s = state.require(settings, adw_id)
    wt = Path(s["worktree_path"])
    if not wt.is_dir():
        raise GroveError(f"{adw_id} has no worktree at {wt}", hint="run `inv doctor`, or set it up again")
    staged, unchanged = [], []
    with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is being set up or torn down right now"):
        for name in hidden_files(wt):
            if name not in settings.path_configs:
                continue
            working = _working_bytes(wt, name)
            if working is None or working == _expected(settings, s, wt, name):
                unchanged.append(name)
                continue
            try:
                edited = json.loads(working)
            except ValueError as exc:
                raise bad_input(f"{wt / name} is not valid JSON ({exc})", "fix it, then stage again") from None
            committed = json.loads(_committed(wt, name) or b"null")
            portable = _unrepoint(edited, committed, settings, wt)
            text = json.dumps(portable, indent=2) + "\n"
            blob = _git_bytes(wt, "hash-object", "-w", "--stdin", data=text.encode()).decode().strip()
            mode = git.git(wt, "ls-files", "-s", "--", name).split()[0]
            git.git(wt, "update-index", "--cacheinfo", f"{mode},{blob},{name}")
            git.git(wt, "update-index", "--skip-worktree", "--", name)
            staged.append(name)
    return {"adw_id": adw_id, "staged": staged, "unchanged": unchanged}


def _unrepoint(edited, committed, settings: Settings, wt: Path):
    """``edited`` with each worktree path written as the committed file had it, else as ./relative."""
    def back(value, original):
        if isinstance(value, dict):
            return {k: back(v, original.get(k) if isinstance(original, dict) else None) for k, v in value.items()}
        if isinstance(value, list):
            olds = original if isinstance(original, list) else []
            return [back(v, olds[i] if i < len(olds) else None) for i, v in enumerate(value)]
        if not isinstance(value, str) or not (value == str(wt) or value.startswith(str(wt) + os.sep)):
            return value
        if isinstance(original, str):
            again, _ = repoint.repoint_data(original, settings.repo, settings.trees_path, wt)
            if again == value:
                return original
        rel = os.path.relpath(value, wt)
        return "./" if rel == "." else f"./{rel}"

    return back(edited, committed)
