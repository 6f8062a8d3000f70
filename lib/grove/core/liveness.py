"""Is the process that wrote a record still running? A pid plus its start time, never a pid alone.

Pids are reused (pid_max is 32768 on many machines): a fill killed with kill -9 whose pid was later
taken by another process stayed `filling` forever, because `kill(pid, 0)` said "alive" (issue 20,
item 12). So every record Grove writes for a live holder (a port claim, a pool fill, a running exec)
carries :func:`stamp`: the pid and when that process started. A holder counts as alive only if a
process with that pid runs now *and* started at that time.

The start time comes from, in order: Linux's /proc/<pid>/stat field 22 (clock ticks since boot,
with the boot id, since ticks restart at each boot), psutil's create_time, or `ps -o lstart=`
(macOS and the BSDs). A record with no start time (written by an older Grove) falls back to the pid
check; so does a start time that cannot be read now (the safe direction: kept, never reclaimed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache

KEY = "pid_started"  # the record's field beside "pid"


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _from_proc(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the name (field 2) may hold spaces and ')'
    return f"linux:{_boot_id()}:{fields[19]}"  # field 22 of the whole line: starttime


def _from_psutil(pid: int) -> str | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return f"psutil:{psutil.Process(pid).create_time():.2f}"
    except Exception:  # NoSuchProcess, AccessDenied
        return None


def _from_ps(pid: int) -> str | None:
    ps = shutil.which("ps")
    if not ps:
        return None
    try:
        out = subprocess.run([ps, "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C", "TZ": "UTC"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = " ".join(out.stdout.split())
    return f"ps:{text}" if out.returncode == 0 and text else None


def started(pid: int) -> str | None:
    """An opaque token for when ``pid`` started, or None when it does not run or cannot be read.

    Tokens from one machine compare equal exactly when they name the same process start.
    """
    if os.path.isdir("/proc/self") and os.path.exists("/proc/self/stat"):
        return _from_proc(pid)
    return _from_psutil(pid) or _from_ps(pid)


def stamp(pid: int | None = None) -> dict:
    """``{"pid": ..., "pid_started": ...}`` for this process (or ``pid``), to store in a record."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, KEY: started(pid)}


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it runs
    return True


def holder_alive(record: dict | None) -> bool:
    """The process a record names (``pid``, and ``pid_started`` when recorded) still runs.

    A different start time means the pid was reused: the holder is dead (issue 20, item 12).
    """
    pid = (record or {}).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _pid_runs(pid):
        return False
    recorded = (record or {}).get(KEY)
    if not recorded:
        return True  # an older record, pid only: as before
    now = started(pid)
    return now is None or now == recorded
