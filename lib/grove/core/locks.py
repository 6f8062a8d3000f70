"""File locks on sidecar files and atomic writes.

Locks are filelock's OS-level (flock) locks on ``x.lock`` files, never on the data file.
The kernel drops them when the holder dies, so a crashed process never leaves a stale lock.
Lock files are never deleted: deleting one while another process waits on it breaks exclusion.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import GroveError


def _record_holder(fd: int) -> None:
    # The holder's pid goes into the lock file so a waiter can say who it waits for.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "?"
    except OSError:
        return "?"


@contextmanager
def locked(lock_path: Path, timeout: float, busy: str) -> Iterator[None]:
    """Hold the lock at ``lock_path``; after ``timeout`` seconds raise GroveError(busy) (exit 1).

    ``timeout=0`` tries exactly once.
    """
    from filelock import FileLock, Timeout  # lazy: keeps `inv --list` lean

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=timeout, fallback_to_soft=False, preserve_lock_file=True,
                    on_acquired=_record_holder)
    try:
        # filelock polls a busy lock every 50 ms by default; ten setups in one process queue on the
        # port registry and the repo lock for a few ms each, so poll every 5 ms (issue 12).
        lock.acquire(poll_interval=0.005)
    except Timeout:
        raise GroveError(f"{busy} (lock {lock_path} held by pid {holder(lock_path)})",
                         hint="wait for it to finish, or retry") from None
    try:
        yield
    finally:
        lock.release()


def atomic_write_text(path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``text`` so readers see the old file or the new one, never a torn one.

    A temp file in the same directory, fsync, ``os.replace``, unlink on failure (pip, python-dotenv).
    ``durable=False`` skips the fsync (about 1.4 ms each, issue 12) for files a re-run writes again
    anyway (a worktree's env files, stamps): still atomic for readers, only not crash-durable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, what: str) -> object | None:
    """The parsed file, None when it is absent; a corrupt file is an error naming it, never replaced."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GroveError(f"{what} {path} is not valid JSON ({exc})",
                         hint="fix or move the file aside; Grove will not overwrite it") from None
    if data is None:
        # `null` would read as an absent file, and callers would write a fresh one over it.
        raise GroveError(f"{what} {path} holds JSON null, not Grove's data",
                         hint="fix or move the file aside; Grove will not overwrite it")
    return data
