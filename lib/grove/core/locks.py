"""File locks on sidecar files and atomic writes.

Locks are OS-level (flock) locks on ``x.lock`` files, never on the data file.
The kernel drops them when the holder dies, so a crashed process never leaves a stale lock.
Lock files are never deleted: deleting one while another process waits on it breaks exclusion.
A free lock is taken with one flock call; filelock waits for a busy one and handles the odd cases.
"""

from __future__ import annotations

import fcntl
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
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = None
    try:
        fd = _take_if_free(lock_path)
        if fd is None:
            with _wait_for(lock_path, timeout, busy):
                yield
            return
        yield
    finally:
        if fd is not None:  # whatever interrupted us
            _release(fd)


def _take_if_free(lock_path: Path) -> int | None:
    """The lock's open descriptor, locked, when the lock is free now; None for anything else.

    The same flock filelock takes, so the two exclude each other. Importing filelock costs ~9 ms, a
    fifth of what a pooled setup may spend beyond a bare `inv` start-up (issue 24 §2); a free lock,
    the common case, needs none of it. A busy lock, a symlink, a permission problem or a lock file
    unlinked meanwhile (never by Grove) are left to filelock.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink:  # else unlinked after our open: its path names another file now
            _record_holder(fd)
            return fd
    except OSError:
        pass
    except BaseException:  # Ctrl-C between the flock and our caller's `finally`: never leave it held
        _release(fd)
        raise
    _release(fd)
    return None


def _release(fd: int) -> None:
    # Unlocked before it is closed: a child another thread is forking shares the open file until its
    # exec closes it, and closing our descriptor alone would leave the lock held until then.
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _wait_for(lock_path: Path, timeout: float, busy: str) -> Iterator[None]:
    from filelock import FileLock, Timeout  # lazy: only a busy lock needs it

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
