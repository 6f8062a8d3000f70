"""File locks on sidecar files and atomic writes.

Locks are OS-level (flock) locks on ``x.lock`` files, never on the data file.
The kernel drops them when the holder dies, so a crashed process never leaves a stale lock.
Lock files are never deleted: deleting one while another process waits on it breaks exclusion.
A busy lock is polled with one flock call on a descriptor kept open: 28 processes waiting through
filelock (which reopens the file and runs its own bookkeeping on every try) burned three quarters
of this 2-core machine while one of them held the lock, and stretched every holder's turn (30
setups at once, issue 24 §3); the same wait costs a few microseconds a try here.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import GroveError


POLL = 0.005  # seconds between tries of a busy lock: ten setups in one process queue a few ms each (issue 12)


def _record_holder(fd: int) -> None:
    # The holder's pid goes into the lock file so a waiter can say who it waits for: a note only,
    # so a full disk does not fail the lock over it.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


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
        fd = _take(lock_path, timeout)
        if fd is None:
            raise GroveError(f"{busy} (lock {lock_path} held by pid {holder(lock_path)})",
                             hint="wait for it to finish, or retry")
        _record_holder(fd)
        yield
    finally:
        if fd is not None:  # whatever interrupted us
            _release(fd)


def _take(lock_path: Path, timeout: float) -> int | None:
    """The lock file's descriptor, holding its flock; None when it stayed busy ``timeout`` seconds.

    Whatever interrupts it (Ctrl-C, an error) lets go of the lock before it propagates."""
    deadline = time.monotonic() + timeout
    fd: int | None = _open(lock_path)
    try:
        while True:
            assert fd is not None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                # EACCES: how some filesystems (SMB) say "busy", as filelock also reads it.
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise _cannot(lock_path, exc) from None
                if time.monotonic() >= deadline:
                    # Forgotten before it is closed: a Ctrl-C landing in close() must not make the
                    # handler below close the number again, maybe another thread's file by then.
                    busy, fd = fd, None
                    os.close(busy)
                    return None
                time.sleep(POLL)
                continue
            if os.fstat(fd).st_nlink:
                return fd
            # Unlinked since we opened it (never by Grove): its path names another file now.
            stale, fd = fd, None
            _release(stale)
            fd = _open(lock_path)
    except BaseException:
        if fd is not None:
            _release(fd)
        raise


def _open(lock_path: Path) -> int:
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise _cannot(lock_path, exc) from None


def _cannot(lock_path: Path, exc: OSError) -> GroveError:
    return GroveError(f"cannot lock {lock_path}: {exc.strerror}",
                      hint="check the directory's permissions and filesystem (a lock file is never a symlink)")


def _release(fd: int) -> None:
    # Unlocked before it is closed: a child another thread is forking shares the open file until its
    # exec closes it, and closing our descriptor alone would leave the lock held until then.
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
