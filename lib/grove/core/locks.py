"""File locks on sidecar files and atomic writes.

Locks are OS-level (flock) locks on ``x.lock`` files, never on the data file.
The kernel drops them when the holder dies, so a crashed process never leaves a stale lock.
Lock files are never deleted: deleting one while another process waits on it breaks exclusion.
A busy lock is waited for in the kernel, not by polling: 28 processes polling it every 5 ms
(filelock's way) burned three quarters of this 2-core machine while one of them held it, and
stretched every holder's turn (30 setups at once, issue 24 §3).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
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
    """The lock file's descriptor, holding its flock; None when it stayed busy ``timeout`` seconds."""
    while True:
        fd = _open(lock_path)
        if not _flock(fd, lock_path, timeout):
            return None
        if os.fstat(fd).st_nlink:
            return fd
        _release(fd)  # unlinked while we waited (never by Grove): its path names another file now


def _open(lock_path: Path) -> int:
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise _cannot(lock_path, exc) from None


def _cannot(lock_path: Path, exc: OSError) -> GroveError:
    return GroveError(f"cannot lock {lock_path}: {exc.strerror}",
                      hint="check the directory's permissions and filesystem (a lock file is never a symlink)")


def _flock(fd: int, lock_path: Path, timeout: float) -> bool:
    """Take ``fd``'s flock: at once when it is free, else within ``timeout`` seconds. True when held;
    when not, ``fd`` is closed (or will be, by the helper thread that still waits for it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if timeout > 0:
            return _flock_waiting(fd, lock_path, timeout)
        os.close(fd)
        return False
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise _cannot(lock_path, exc) from None
        raise


def _flock_waiting(fd: int, lock_path: Path, timeout: float) -> bool:
    """A blocking flock (flock has no timeout) in a helper thread, waited for at most ``timeout``
    seconds. A waiter that gives up leaves the descriptor to the helper, which lets the lock go as
    soon as it gets it."""
    done, guard = threading.Event(), threading.Lock()
    outcome: list = []  # the first word wins: the helper's (True, or its OSError), or the waiter's None

    def wait() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # queued in the kernel, woken when the holder lets go
            result: bool | OSError = True
        except OSError as exc:
            result = exc
        with guard:
            if not outcome:
                outcome.append(result)
                done.set()
                return
        _release(fd)  # the waiter gave up: let the next one have it

    def settle() -> bool | OSError | None:
        with guard:
            if not outcome:
                outcome.append(None)
            return outcome[0]

    try:
        threading.Thread(target=wait, name=f"grove-lock-wait-{fd}", daemon=True).start()
        done.wait(timeout)
    except BaseException:  # Ctrl-C while waiting
        if settle() is not None:
            _release(fd)
        raise
    result = settle()
    if isinstance(result, OSError):
        os.close(fd)
        raise _cannot(lock_path, result)
    return result is True


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
