"""What differs between Linux and macOS: finding and stopping processes, and choosing a copier.

Each job has a chain of mechanisms, best first, so no Linux-only mechanism lacks a fallback (issue 15):
  processes  psutil (when importable) -> /proc (Linux) -> `ps` + `lsof` (macOS, the BSDs, Linux too)
  copies     GNU `cp -a --reflink=auto` (copy-on-write where the filesystem can) -> Python's own copy,
             symlinks kept as symlinks and modes and times kept (shutil.copy2)
``ADW_PROCESS_BACKEND`` and ``ADW_COPY_BACKEND`` (``auto`` by default) force one, which is how
tests/test_exec.py runs every path on one machine.

Safety (DESIGN.md, "trust first"): a process is stopped only when its working directory or its
executable, resolved with realpath, lies inside the directory being removed; never Grove itself or
any of its ancestors (the shell you typed `inv teardown` in may sit in that worktree). Where the OS
has pidfds (Linux 5.3+), a signal goes through a pidfd opened before the last check, so a pid
reused in between can never be hit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from .hints import install_extra
from .errors import GroveError, bad_input

PROCESS_BACKENDS = ("auto", "psutil", "proc", "lsof")
COPY_BACKENDS = ("auto", "cp", "python")
POLL = 0.05  # seconds between liveness checks while a process is stopping


class Proc(NamedTuple):
    pid: int
    ppid: int
    pgid: int
    name: str
    cwd: str | None = None  # None: gone, a zombie, or not ours to read
    exe: str | None = None


# ---------------------------------------------------------------------------------------------
# Choosing a mechanism


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def process_backend(choice: str = "auto") -> str:
    """The mechanism to use: ``choice`` when forced (bad input if it is unavailable here), else the best."""
    available = {"psutil": _has_psutil, "proc": lambda: os.path.isdir("/proc/self/fd") and os.path.exists("/proc/self/cwd"),
                 "lsof": lambda: bool(shutil.which("lsof") and shutil.which("ps"))}
    if choice not in PROCESS_BACKENDS:
        raise bad_input(f"ADW_PROCESS_BACKEND={choice!r} is not one of {', '.join(PROCESS_BACKENDS)}")
    if choice != "auto":
        if not available[choice]():
            raise bad_input(f"ADW_PROCESS_BACKEND={choice} is not available on this machine",
                            "use auto, or install it (psutil: " + install_extra("processes", "psutil") + "; lsof: your package manager)")
        return choice
    for name in ("psutil", "proc", "lsof"):
        if available[name]():
            return name
    raise GroveError("cannot list processes here: no psutil, no /proc and no lsof",
                     hint=install_extra("processes", "psutil") + " (or install lsof)")


@lru_cache(maxsize=1)
def _gnu_cp() -> bool:
    try:
        out = subprocess.run(["cp", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GNU coreutils" in out.stdout


def copy_backend(choice: str = "auto") -> str:
    if choice not in COPY_BACKENDS:
        raise bad_input(f"ADW_COPY_BACKEND={choice!r} is not one of {', '.join(COPY_BACKENDS)}")
    if choice == "cp" and not _gnu_cp():
        raise bad_input("ADW_COPY_BACKEND=cp needs GNU cp (coreutils), which is not here", "use auto or python")
    if choice != "auto":
        return choice
    return "cp" if _gnu_cp() else "python"


# ---------------------------------------------------------------------------------------------
# The process table, three ways


def processes(backend: str, *, paths: bool = True) -> list[Proc]:
    """Every live process we can see (zombies left out); ``paths`` also reads each one's cwd and exe."""
    return {"psutil": _psutil_table, "proc": _proc_table, "lsof": _ps_lsof_table}[backend](paths)


def _psutil_table(paths: bool) -> list[Proc]:
    import psutil

    attrs = ["pid", "ppid", "name", "status"] + (["cwd", "exe"] if paths else [])
    out = []
    for p in psutil.process_iter(attrs, ad_value=None):
        info = p.info
        if info["status"] in (None, psutil.STATUS_ZOMBIE, getattr(psutil, "STATUS_DEAD", "dead")):
            continue
        try:
            pgid = os.getpgid(info["pid"])
        except OSError:
            continue
        out.append(Proc(info["pid"], info["ppid"] or 0, pgid, info["name"] or "?",
                        info.get("cwd") or None, info.get("exe") or None))
    return out


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, ppid, pgid) from /proc/<pid>/stat; the name is in parentheses and may hold spaces."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    name, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
    return name, rest[0], int(rest[1]), int(rest[2])


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _proc_table(paths: bool) -> list[Proc]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is None or stat[1] in ("Z", "X"):
            continue
        cwd = _readlink(f"/proc/{entry}/cwd") if paths else None
        exe = _readlink(f"/proc/{entry}/exe") if paths else None
        out.append(Proc(int(entry), stat[2], stat[3], stat[0], cwd, exe))
    return out


def _ps_lsof_table(paths: bool) -> list[Proc]:
    """`ps` for the tree (POSIX options, same on macOS), `lsof` for each process's cwd and program."""
    ps = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat=,comm="], capture_output=True, text=True,
                        timeout=30, env=dict(os.environ, LC_ALL="C"))
    rows: dict[int, list] = {}
    for line in ps.stdout.splitlines():
        parts = line.split(None, 4)
        if len(parts) < 4 or parts[3].startswith("Z"):
            continue
        name = os.path.basename(parts[4]) if len(parts) > 4 else "?"
        rows[int(parts[0])] = [int(parts[1]), int(parts[2]), name, None, None]
    if paths:
        for pid, kind, name in _lsof_fields(["-d", "cwd,txt"]):
            row = rows.get(pid)
            if row is None:
                continue
            if kind == "cwd" and row[3] is None:
                row[3] = name
            elif kind == "txt" and row[4] is None:  # the first txt is the program; the rest are libraries
                row[4] = name
    return [Proc(pid, r[0], r[1], r[2], r[3], r[4]) for pid, r in rows.items()]


def _lsof_fields(selection: list[str]) -> Iterable[tuple[int, str, str]]:
    """(pid, fd kind, path) from `lsof -F pfn`: one field per line, p starts a process, f a file."""
    out = subprocess.run(["lsof", "-w", "-n", "-P", "-F", "pfn", *selection], capture_output=True, text=True,
                         timeout=60)
    pid, kind = 0, ""
    for line in out.stdout.splitlines():
        tag, value = line[:1], line[1:]
        if tag == "p":
            pid = int(value)
        elif tag == "f":
            kind = value
        elif tag == "n" and pid:
            yield pid, kind, value


def _one(backend: str, pid: int) -> Proc | None:
    """One process, read afresh (for the last check before a signal); None when gone or a zombie."""
    if backend == "proc":
        stat = _proc_stat(pid)
        if stat is None or stat[1] in ("Z", "X"):
            return None
        return Proc(pid, stat[2], stat[3], stat[0], _readlink(f"/proc/{pid}/cwd"), _readlink(f"/proc/{pid}/exe"))
    if backend == "psutil":
        import psutil

        try:
            p = psutil.Process(pid)
            with p.oneshot():
                if p.status() == psutil.STATUS_ZOMBIE:
                    return None
                return Proc(pid, p.ppid(), os.getpgid(pid), p.name(), _safe(p.cwd), _safe(p.exe))
        except (psutil.Error, OSError):
            return None
    ps = subprocess.run(["ps", "-o", "ppid=,pgid=,stat=,comm=", "-p", str(pid)], capture_output=True, text=True,
                        timeout=30, env=dict(os.environ, LC_ALL="C"))
    parts = ps.stdout.split(None, 3)
    if ps.returncode != 0 or len(parts) < 3 or parts[2].startswith("Z"):
        return None
    found: dict[str, str] = {}
    for _, kind, name in _lsof_fields(["-a", "-p", str(pid), "-d", "cwd,txt"]):
        found.setdefault(kind, name)
    return Proc(pid, int(parts[0]), int(parts[1]), os.path.basename(parts[3]) if len(parts) > 3 else "?",
                found.get("cwd"), found.get("txt"))


def _safe(getter: Callable[[], str]) -> str | None:
    try:
        return getter() or None
    except Exception:  # psutil.AccessDenied and friends: not ours to read
        return None


# ---------------------------------------------------------------------------------------------
# Where a user's machine-wide state lives (issue 23: the port lease registry)


def user_state_dir(app: str = "grove") -> Path:
    """What ``platformdirs.user_state_dir(app)`` answers, without the dependency: on macOS
    ``~/Library/Application Support/<app>``, elsewhere ``$XDG_STATE_HOME/<app>`` (an absolute one),
    else ``~/.local/state/<app>`` (the XDG base directory spec)."""
    home = Path(os.path.expanduser("~"))
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / app
    xdg = os.environ.get("XDG_STATE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else home / ".local" / "state") / app


def alive(pid: int, backend: str | None = None) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    backend = backend or process_backend()
    if backend == "proc":
        stat = _proc_stat(pid)
        return stat is not None and stat[1] not in ("Z", "X")
    if backend == "psutil":
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, timeout=30)
    return ps.returncode == 0 and bool(ps.stdout.strip()) and not ps.stdout.strip().startswith("Z")


# ---------------------------------------------------------------------------------------------
# Processes inside a directory (teardown, gc, merge --cleanup)


def _inside(path: str | None, root: str) -> bool:
    # A cwd whose directory was deleted reads "<old path> (deleted)" on Linux: it is not inside the
    # directory that now has that path (a new worktree at the same place), so it never matches.
    if not path or (path.endswith(" (deleted)") and not os.path.exists(path)):
        return False
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _ancestors(table: list[Proc]) -> set[int]:
    """This process and every process above it, up to init: whoever started Grove (a shell sitting in
    the worktree, `make`, an agent) must survive the teardown it asked for."""
    parents = {p.pid: p.ppid for p in table}
    parents.setdefault(os.getpid(), os.getppid())
    chain, pid = set(), os.getpid()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        pid = parents.get(pid, 0)
    return chain


def _pipeline(table: list[Proc]) -> set[int]:
    """The rest of Grove's own shell pipeline (`grove teardown ... | cat`): a sibling whose stdin or
    stdout is one of our own pipes. A server the same script started earlier shares our parent and
    process group too, but not our pipes, so it is still stopped. (Linux: /proc; elsewhere none.)"""
    ours = {target for target in (_fd_target("self", fd) for fd in (0, 1)) if target and target.startswith("pipe:")}
    if not ours:
        return set()
    parent = os.getppid()
    return {p.pid for p in table
            if p.ppid == parent and ({_fd_target(str(p.pid), 0), _fd_target(str(p.pid), 1)} & ours)}


def _fd_target(pid: str, fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def inside(root: Path, backend: str) -> list[Proc]:
    """Live processes whose cwd or executable lies inside ``root`` (realpath), except us, our
    ancestors and our own pipeline."""
    real = os.path.realpath(root)
    table = processes(backend)
    candidates = [p for p in table if _inside(p.cwd, real) or _inside(p.exe, real)]
    if not candidates:
        return []
    mine = _ancestors(table) | _pipeline(candidates)
    return sorted((p for p in candidates if p.pid not in mine), key=lambda p: p.pid)


def stop_inside(root: Path, backend: str, grace: float) -> list[dict]:
    """Stop every process running inside ``root``: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns ``[{"pid", "name", "signal"}]`` for each one stopped (``signal``: the one that ended it).
    Each signal is preceded by a fresh check that the process still lies inside ``root``.
    Raises GroveError when one cannot be stopped (another user's process): nothing is removed then.
    """
    real = os.path.realpath(root)
    found = inside(root, backend)
    if not found:
        return []

    def still_inside(pid: int) -> bool:
        p = _one(backend, pid)
        return p is not None and (_inside(p.cwd, real) or _inside(p.exe, real))

    stopped, pending = [], {}
    for p in found:
        try:
            if _signal(p.pid, signal.SIGTERM, still_inside):
                pending[p.pid] = p
        except PermissionError:
            raise GroveError(f"cannot stop pid {p.pid} ({p.name}) running in {root}: permission denied",
                             hint="stop it yourself (it belongs to another user), then try again") from None
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        for pid in [pid for pid in pending if not still_inside(pid)]:
            stopped.append({"pid": pid, "name": pending.pop(pid).name, "signal": "SIGTERM"})
        if pending:
            time.sleep(POLL)
    for pid, p in list(pending.items()):
        _signal(pid, signal.SIGKILL, still_inside)
    deadline = time.monotonic() + max(grace, 2.0)
    while pending and time.monotonic() < deadline:
        for pid in [pid for pid in pending if not still_inside(pid)]:
            stopped.append({"pid": pid, "name": pending.pop(pid).name, "signal": "SIGKILL"})
        if pending:
            time.sleep(POLL)
    if pending:
        names = ", ".join(f"{pid} ({p.name})" for pid, p in pending.items())
        raise GroveError(f"processes still running in {root} after SIGKILL: {names}",
                         hint="they may be stuck in the kernel (D state); wait, then try again")
    return sorted(stopped, key=lambda d: d["pid"])


def _signal(pid: int, sig: int, verify: Callable[[int], bool]) -> bool:
    """Send ``sig`` to ``pid`` if ``verify(pid)`` still holds; through a pidfd when the OS has them."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        if not verify(pid):
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True
    try:
        fd = opener(pid)
    except ProcessLookupError:
        return False
    except OSError:  # a kernel without pidfd: fall back to kill
        opener = None
        fd = -1
    try:
        if not verify(pid):
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd >= 0:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# A whole process tree (inv exec's timeouts and Ctrl-C)


def tree(pid: int, backend: str) -> list[Proc]:
    """``pid``'s process group and every descendant, even one that left the group (setsid)."""
    table = processes(backend, paths=False)
    children: dict[int, list[Proc]] = {}
    for p in table:
        children.setdefault(p.ppid, []).append(p)
    found = {p.pid: p for p in table if p.pgid == pid}
    todo = [pid, *found]
    seen = set(todo)
    while todo:
        for child in children.get(todo.pop(), []):
            if child.pid not in seen:
                seen.add(child.pid)
                found[child.pid] = child
                todo.append(child.pid)
    found.pop(pid, None)
    return list(found.values())


# Every process a command starts inherits its environment, so a variable unique to the run marks
# them all, even a daemon that left the tree (fork, setsid, parent exits: re-parented to init).
MARK = "GROVE_RUN_MARK"


def new_mark() -> str:
    return os.urandom(8).hex()


def marked(mark: str, backend: str) -> list[int]:
    """The live processes whose environment holds ``GROVE_RUN_MARK=<mark>`` (ours to read: same user).

    With the ps + lsof backend there is no portable way to read another process's environment:
    none are found, and a stop reaches the command's group and tree only."""
    needle = f"{MARK}={mark}"
    if backend == "proc":
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as handle:
                        if needle.encode() in handle.read().split(b"\0"):
                            found.append(int(entry))
                except OSError:
                    continue
        return found
    if backend == "psutil":
        import psutil

        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get(MARK) == mark:
                    found.append(p.pid)
            except (psutil.Error, OSError):
                continue
        return found
    return []


def stop_tree(popen: subprocess.Popen, backend: str, grace: float, hurry: Callable[[], bool] = lambda: False,
              mark: str | None = None) -> str:
    """Stop a command started with ``start_new_session=True`` and everything it started.

    SIGTERM to its process group and to each descendant found (a snapshot taken first, while
    the tree is whole) and, with ``mark`` (the command's env has GROVE_RUN_MARK=<mark>), to every
    process carrying it; SIGKILL to what is left after ``grace`` seconds (sooner when ``hurry()``).
    The command itself is reaped last, so its pid, which is the group's id, cannot be reused meanwhile.
    Returns the signal that ended it.
    """
    root = popen.pid

    def found() -> list[int]:
        pids = {p.pid for p in tree(root, backend)} | (set(marked(mark, backend)) if mark else set())
        return sorted(pids - {root, os.getpid()})

    rest = found()
    fds = _pidfds(rest)  # opened now: later signals cannot reach a reused pid
    try:
        _group(root, signal.SIGTERM)
        _each(rest, fds, signal.SIGTERM)
        used = "SIGTERM"
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not hurry():
            if not alive(root, backend) and not any(alive(pid, backend) for pid in rest):
                break
            time.sleep(POLL)
        else:
            used = "SIGKILL"
        # SIGKILL the group in any case: it catches what was started during the grace period, as a
        # second look for marked processes does.
        _group(root, signal.SIGKILL)
        _kill_the_rest(found, rest, fds, backend)
    finally:
        for fd in fds.values():
            os.close(fd)
    popen.wait()
    return used


def _group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfds(pids: list[int]) -> dict[int, int]:
    opener = getattr(os, "pidfd_open", None)
    fds = {}
    if opener is not None:
        for pid in pids:
            try:
                fds[pid] = opener(pid)
            except OSError:
                pass
    return fds


def _kill_the_rest(found: Callable[[], list[int]], pids: list[int], fds: dict[int, int], backend: str) -> None:
    """SIGKILL what still lives of ``pids`` and of what ``found()`` sees now (started meanwhile);
    the late ones' pidfds join ``fds``, which the caller closes."""
    late = [p for p in found() if p not in fds]
    fds.update(_pidfds(late))
    _each([p for p in pids + late if alive(p, backend)], fds, signal.SIGKILL)


def _each(pids: list[int], fds: dict[int, int], sig: int) -> None:
    for pid in pids:
        try:
            if pid in fds:
                signal.pidfd_send_signal(fds[pid], sig)
            elif getattr(os, "pidfd_open", None) is None:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_group(pid: int, is_leader: Callable[[int], bool], backend: str, grace: float,
               mark: str | None = None) -> str | None:
    """Stop a process Grove started in a session of its own (``grove up``'s services, issue 23) and
    everything it started, when Grove is no longer its parent: as :func:`stop_tree` does, but the
    leader is signalled (and its group) only while ``is_leader(pid)`` holds (its recorded pid and
    start time, core/liveness.py); ``mark`` (GROVE_RUN_MARK) finds what left the group. Returns the
    signal that ended it, or None when nothing of it was running."""
    fds = _pidfds([pid])  # opened before the check: a pid reused after it cannot be hit
    leader = is_leader(pid) and alive(pid, backend)
    if not leader and pid in fds:
        os.close(fds.pop(pid))

    def found() -> list[int]:
        pids = set(marked(mark, backend)) if mark else set()
        if leader:
            pids |= {p.pid for p in tree(pid, backend)}
        return sorted(pids - {pid, os.getpid()})

    rest = found()
    if not leader and not rest:
        return None
    fds.update(_pidfds(rest))
    mine = ([pid] if leader else []) + rest
    try:
        if leader:
            _group(pid, signal.SIGTERM)
        _each(mine, fds, signal.SIGTERM)
        used = "SIGTERM"
        deadline = time.monotonic() + grace
        while any(alive(p, backend) for p in mine):
            if time.monotonic() >= deadline:
                used = "SIGKILL"
                break
            time.sleep(POLL)
        if leader and is_leader(pid) and alive(pid, backend):
            _group(pid, signal.SIGKILL)
        _kill_the_rest(found, mine, fds, backend)
    finally:
        for fd in fds.values():
            os.close(fd)
    return used
