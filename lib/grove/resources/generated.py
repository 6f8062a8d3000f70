"""Which ignored files in a worktree are Grove's own and unchanged: the archive leaves only those out.

Decided by content, never by name alone (issue 20): a file is Grove's own when it holds exactly
what Grove writes there for the worktree's values (``.ports.env``, an env file merged fresh from
the main checkout's copy, an untracked config repointed from the main checkout's copy), or when
it is a copy `.worktreeinclude` made that still equals the main checkout's file. A `.env` the agent
edited, or a database the reset made and the agent wrote to, differs, so it is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from ..core.config import Settings
from ..core.errors import GroveError
from ..safety import archive
from . import agentdb, compose, envfiles, include, ports, repoint

OLD_DIR_IGNORE = repoint.OLD_DIR_IGNORE


def env_values(settings: Settings, adw_id: str, claimed: dict[str, int]) -> dict[str, str]:
    """What .ports.env and every merged env file get: the ports, the Compose project name and the
    agent's database URL (issue 14). The URL is known from the name before the db step runs."""
    values = ports.env_lines(claimed)
    if settings.compose_project_var:
        values[settings.compose_project_var] = compose.project_name(settings.repo.name, adw_id)
    values.update(agentdb.env_values(settings, adw_id))
    return values


def expected(settings: Settings, wt: Path, values: dict[str, str] | None) -> dict[str, bytes]:
    """What Grove writes into ``wt`` for ``values`` (none known: only what needs no values)."""
    out: dict[str, bytes] = {}
    if values:
        out[envfiles.PORTS_FILE] = envfiles.ports_text(values).encode()
        for name in settings.env_files:
            source, _ = envfiles.source_for(settings.repo / name)
            try:
                text = source.read_text(encoding="utf-8") if source else ""
                out[name] = envfiles.lay_over(text, values, source or wt / name).encode()
            except (OSError, UnicodeDecodeError, GroveError):  # cannot say what Grove wrote: the file is kept
                continue
    for name in settings.path_configs:
        made = _repointed(settings, wt, name)
        if made is not None:
            out[name] = made
    return out


def _repointed(settings: Settings, wt: Path, name: str) -> bytes | None:
    """An untracked config as the repoint step writes it from the main checkout's copy."""
    try:
        text = (settings.repo / name).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    new, _ = repoint.repoint_data(data, settings.repo, settings.trees_path, wt)
    return repoint.as_written(text, data, new).encode()


def snapshot(settings: Settings, wt: Path) -> dict[str, list[int]]:
    """Every file of the worktree but .git and regenerable output, as path -> [size, mtime_ns].

    A walk, not git: it runs around every db reset, and a setup's git calls are counted (issue 12).
    Only ignored files are ever looked up in what it finds, so tracked ones do no harm."""
    return fingerprints(wt, archive.every_file(wt, (*settings.regenerable_dirs, ".git")))


def fingerprints(root: Path, rels) -> dict[str, list[int]]:
    """``rels`` under ``root`` as path -> [size, mtime_ns] (the symlink itself, not its target), the
    ones that are not there left out: what ``unchanged`` compares a file with later."""
    out = {}
    for rel in rels:
        try:
            st = (root / rel).lstat()
        except OSError:
            continue
        out[rel] = [st.st_size, st.st_mtime_ns]
    return out


def made_between(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, list[int]]:
    """What appeared or changed from ``before`` to ``after``: what a step (the db reset) wrote.
    A file of the agent's that the step left alone is not in it, so it is never taken for Grove's."""
    return {rel: fp for rel, fp in after.items() if before.get(rel) != fp}


RECORD = "grove-files.json"  # in the worktree's own git admin dir: it lives and goes with the worktree


def record(wt: Path, made: dict[str, list[int]]) -> None:
    """Add ``made`` (path -> [size, mtime_ns]) to the worktree's record of files Grove's steps wrote."""
    from ..core import git, locks

    target = git.own_admin_dir(wt) / RECORD
    locks.atomic_write_text(target, json.dumps({**recorded(wt), **made}, sort_keys=True) + "\n", 0o600)


def recorded(wt: Path) -> dict[str, list[int]]:
    """The record ``record`` keeps; {} when there is none or it cannot be read (then nothing is
    taken for Grove's: the safe direction)."""
    from ..core import git

    try:
        data = json.loads((git.own_admin_dir(wt) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def unchanged(path: Path, recorded: list | None) -> bool:
    """``path`` still has the [size, mtime_ns] recorded when Grove wrote it."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return recorded is not None and [st.st_size, st.st_mtime_ns] == list(recorded)


def own_unchanged(settings: Settings, wt: Path, values: dict[str, str] | None,
                  recorded: dict[str, list[int]] | None = None) -> Callable[[str], bool]:
    """A predicate over paths relative to ``wt``: True for Grove's own files, unchanged.

    ``recorded``: files a Grove step wrote (the db reset's output, a pool fill's), with the size
    and mtime they had then (the state's ``grove_files``): unchanged since, they are Grove's."""
    made = expected(settings, wt, values)
    included: set[str] | None = None

    def is_own(rel: str) -> bool:
        nonlocal included
        path = wt / rel
        if os.path.islink(path) or not path.is_file():
            return False
        if recorded and unchanged(path, recorded.get(rel)):
            return True
        size = path.stat().st_size
        if rel in made and size == len(made[rel]) and _read(path) == made[rel]:
            return True
        if Path(rel).name == ".gitignore" and _read(path) == OLD_DIR_IGNORE.encode():
            return True
        if included is None:
            included = set(include.listed(settings))
        return rel in included and _same_file(path, settings.repo / rel, size)

    return is_own


def _same_file(a: Path, b: Path, size: int) -> bool:
    """Byte for byte, without reading a large database into memory at once."""
    import filecmp

    try:
        return not os.path.islink(b) and b.stat().st_size == size and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
