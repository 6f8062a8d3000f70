"""Services per agent (issue 23): `grove up`, `down`, `ps`, `logs` over the repository's Procfile.

A ``Procfile`` at the repository root (``ADW_PROCFILE`` names another) lists the app's processes,
one ``name: command`` a line (foreman/honcho). A service serves the port variable named by a
trailing ``# port=VAR`` (``# port=none``: no port), else the first of the agent's port variables its
command mentions, by position (``$BACKEND_PORT`` or ``${BACKEND_PORT}``). Each runs through ``/bin/sh -c`` (the
Procfile is the user's own config, as ``ADW_MERGE_VALIDATE`` is) in the worktree, with exactly
the env `grove run` exports plus ``GROVE_RUN_MARK``, in a session of its own, its output in
``<agents>/<id>/logs/<service>.log``. Its pid and start time go into the agent's state (pids are
reused), and the agent's port lease counts it as running, for the machine-wide ADW_MAX_RUNNING.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core import liveness, locks, portable, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.report import Reporter
from ..resources import agentdb, ports
from ..resources.services import record_running, running, stop_recorded, stop_services  # noqa: F401 (API)
from . import agentrun, execute

BLOCKED = ("merged", "cleaned")  # an agent whose work is merged or removed has nothing to run
TAIL_LINES = 15  # of a failed service's log, on stderr
POLL = 0.1
_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:\s*(.*)$")
_PORT_NOTE = re.compile(r"\s#\s*port=([A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass(frozen=True)
class Service:
    name: str
    command: str
    port_var: str | None  # None: no port to check


# ---------------------------------------------------------------------------------------------
# The Procfile


def procfile_path(settings: Settings, worktree: Path) -> Path:
    """The worktree's own Procfile (the agent may change it), else the main checkout's."""
    own = worktree / settings.procfile
    return own if own.is_file() else settings.repo / settings.procfile


def parse(text: str, port_vars: list[str], where: str = "Procfile") -> list[Service]:
    """``name: command`` lines; blank lines and ``#`` lines skipped. Bad input names the line."""
    found: dict[str, Service] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match or not match.group(2).strip():
            raise bad_input(f"{where} line {number}: {line[:60]!r} is not 'name: command'")
        name, command = match.group(1), match.group(2).strip()
        if name in found:
            raise bad_input(f"{where} line {number}: service {name!r} is declared twice")
        note = _PORT_NOTE.search(command)
        if note:
            command = command[:note.start()].rstrip()
            var = None if note.group(1).lower() == "none" else note.group(1)
            if var is not None and var not in port_vars:
                raise bad_input(f"{where} line {number}: port={var} is not one of the agent's port variables "
                                f"({', '.join(port_vars)})", "or `# port=none` for a service without a port")
        else:
            var = _first_mentioned(command, port_vars)
        found[name] = Service(name, command, var)
    return list(found.values())


def _first_mentioned(command: str, port_vars: list[str]) -> str | None:
    """The port variable the command mentions first (``$VAR`` or ``${VAR}``): `bun dev --port
    $FRONTEND_PORT --api $BACKEND_PORT` serves FRONTEND_PORT."""
    found = [(m.start(), v) for v in port_vars if (m := re.search(rf"\$(\{{{v}\}}|{v}\b)", command))]
    return min(found)[1] if found else None


def services_of(settings: Settings, s: dict, names: list[str]) -> list[Service]:
    worktree = Path(s["worktree_path"])
    path = procfile_path(settings, worktree)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise bad_input(f"no Procfile: {path} does not exist",
                        "add one ('web: python -m http.server --bind 127.0.0.1 $BACKEND_PORT') or set ADW_PROCFILE") from None
    every = parse(text, list((s.get("ports") or {}).keys()), str(path))
    unknown = [n for n in names if n not in {svc.name for svc in every}]
    if unknown:
        raise bad_input(f"no service {', '.join(unknown)} in {path}", f"its services: {', '.join(svc.name for svc in every)}")
    return [svc for svc in every if not names or svc.name in names]


# ---------------------------------------------------------------------------------------------
# Liveness and health


def log_path(settings: Settings, adw_id: str, name: str) -> Path:
    return settings.agents_path / adw_id / "logs" / f"{name}.log"


def accepts(port: int) -> bool:
    """Something accepts connections on ``port`` at 127.0.0.1 or ::1."""
    from .watch import listening

    return listening(port, timeout=0.3)


def _health(rec: dict) -> str:
    if not running(rec):
        return "exited"
    if not rec.get("port"):
        return "running"
    return "up" if accepts(rec["port"]) else "down"


# ---------------------------------------------------------------------------------------------
# up


def check_timeout(timeout: float, flag: str = "--timeout") -> float:
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise bad_input(f"{flag}={timeout!r} is not a number of seconds") from None
    if not value > 0 or value > 86400:
        raise bad_input(f"{flag}={timeout!r} must be between 0 and 86400 seconds (exclusive of 0)")
    return value


def _requested(settings: Settings, adw_id: str, names: list[str]) -> tuple[dict, list[Service]]:
    """The agent's state and services; bad input (nothing started) when it cannot run them."""
    s = state.require(settings, adw_id)
    if s["status"] in BLOCKED:
        raise bad_input(f"{adw_id} is {s['status']}: it has no services to run")
    if not Path(s["worktree_path"]).is_dir():
        raise bad_input(f"{adw_id} has no worktree at {s['worktree_path']}", "run `grove doctor`, or set it up again")
    if not s.get("ports"):
        raise bad_input(f"{adw_id} has no ports", f"run `grove setup --adw-id {adw_id}` again")
    return s, services_of(settings, s, names)


def up(settings: Settings, ids: list[str], names: list[str], *, timeout: float = 30, wait: bool = False,
       report: Reporter | None = None) -> dict:
    """Start the services of each agent and wait for their ports; every request is checked first.

    Returns ``{"agents": [...], "errors": [...]}``; an agent whose service fails has what this call
    started for it stopped again, and its error carries the last lines of that service's log.
    """
    report = report or Reporter(quiet=True)
    timeout = check_timeout(timeout)
    plans = [(adw_id, *_requested(settings, adw_id, names)) for adw_id in ids]
    done, errors = [], []
    for adw_id, s, services in plans:
        try:
            done.append(_up_one(settings, adw_id, s, services, timeout, wait, report))
        except GroveError as exc:
            errors.append({"adw_id": adw_id, "error": exc.message, "hint": exc.hint or None, "exit_code": exc.code})
    return {"agents": done, "errors": errors}


def _up_one(settings: Settings, adw_id: str, s: dict, services: list[Service], timeout: float, wait: bool,
            report: Reporter) -> dict:
    with locks.locked(settings.lock_path(f"up-{adw_id}"), 0, f"{adw_id}'s services are being started or stopped"):
        _take_place(settings, adw_id, timeout, wait, report)
        started: list[str] = []
        try:
            rows = [_start(settings, adw_id, s, svc, started) for svc in services]
            _wait_ports(settings, adw_id, rows, timeout)
        except BaseException:
            stop_services(settings, adw_id, started)
            raise
        finally:
            record_running(settings, adw_id)
        return {"adw_id": adw_id, "services": rows}


def _take_place(settings: Settings, adw_id: str, timeout: float, wait: bool, report: Reporter) -> None:
    """Count the agent as running under ADW_MAX_RUNNING, machine-wide; over the cap: refuse at once,
    or with ``wait`` say so and wait up to ``timeout`` seconds. Never a silent hang (issue 23)."""
    cap = settings.max_running
    deadline, said = time.monotonic() + timeout, ""
    while True:
        others = ports.reserve_running(settings, adw_id, cap)
        if not others:
            return
        line = f"ADW_MAX_RUNNING={cap}: {len(others)} agent(s) run already: {', '.join(others)}"
        if not wait:
            raise GroveError(f"{adw_id} not started: {line}",
                             hint="`grove down --adw-id ID` one of them, raise ADW_MAX_RUNNING, or `grove up --wait`")
        if time.monotonic() >= deadline:
            raise GroveError(f"{adw_id} not started: waited {timeout:g}s for a place; {line}",
                             hint="`grove down --adw-id ID` one of them, or raise ADW_MAX_RUNNING")
        if line != said:
            report.warn(f"waiting for a place for {adw_id} (up to {timeout:g}s): {line}")
            said = line
        time.sleep(0.5)


def _start(settings: Settings, adw_id: str, s: dict, svc: Service, started: list[str]) -> dict:
    current = state.load(settings, adw_id) or s
    recorded = (current.get("services") or {}).get(svc.name) or {}
    port = (s.get("ports") or {}).get(svc.port_var) if svc.port_var else None
    log = log_path(settings, adw_id, svc.name)
    if recorded and running(recorded):
        return _row(adw_id, svc, recorded, "already_up")
    if port and accepts(port):
        # Someone else answers there (a server started by hand with `grove run`?): waiting for the
        # port would report that one as this service, which would fail to bind unnoticed.
        raise GroveError(f"{adw_id} {svc.name} not started: {svc.port_var}={port} already accepts connections "
                         "from a process Grove did not start as this service",
                         hint="stop what listens there (`ss -ltnp` / `lsof -i :PORT`), then `grove up` again")
    log.parent.mkdir(parents=True, exist_ok=True)
    mark = portable.new_mark()
    # 0600: a service's output can hold whatever its env holds (as `grove exec`'s logs).
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(f"--- grove up {state.now()}: {svc.command}\n".encode())
        out.flush()
        env = {**agentrun.command_env(s), portable.MARK: mark}
        popen = subprocess.Popen(["/bin/sh", "-c", svc.command], cwd=s["worktree_path"], env=env,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    rec = {**liveness.stamp(popen.pid), "mark": mark, "command": svc.command,
           "port_var": svc.port_var, "port": port, "log": str(log), "started_at": state.now()}
    popen.returncode = 0  # never waited for here: the service outlives `grove up` (no ResourceWarning)
    started.append(svc.name)
    state.update(settings, adw_id, lambda st: st.setdefault("services", {}).__setitem__(svc.name, rec))
    return _row(adw_id, svc, rec, "started")


def _row(adw_id: str, svc: Service, rec: dict, outcome: str) -> dict:
    return {"adw_id": adw_id, "service": svc.name, "pid": rec["pid"], "port_var": rec.get("port_var"),
            "port": rec.get("port"), "log": rec["log"], "outcome": outcome}


def _wait_ports(settings: Settings, adw_id: str, rows: list[dict], timeout: float) -> None:
    """Until every declared port accepts connections; a service that exits or runs out of time
    fails with the last lines of its log."""
    recs = (state.load(settings, adw_id) or {}).get("services") or {}
    pending = [r for r in rows if r["port"]]
    deadline = time.monotonic() + timeout
    while pending:
        for row in list(pending):
            if accepts(row["port"]):
                pending.remove(row)
            elif not running(recs.get(row["service"]) or {}):
                _fail(settings, adw_id, row, "exited before it opened its port")
        if pending and time.monotonic() >= deadline:
            _fail(settings, adw_id, pending[0], f"did not open its port in {timeout:g}s")
        if pending:
            time.sleep(POLL)


def _fail(settings: Settings, adw_id: str, row: dict, why: str) -> None:
    tail = agentdb.scrub(settings, "\n".join(execute.log_tail(row["log"]).splitlines()[-TAIL_LINES:]))
    raise GroveError(f"{adw_id} {row['service']} {why} ({row['port_var']}={row['port']}); stopped. "
                     f"Last lines of {row['log']}:\n{tail}",
                     hint=f"fix the command in the Procfile, or raise --timeout; `grove logs --adw-id {adw_id} "
                          f"--service {row['service']}`")


# ---------------------------------------------------------------------------------------------
# down, and stopping on teardown, gc and merge --cleanup


def down(settings: Settings, ids: list[str], names: list[str]) -> list[dict]:
    """Stop services (``names``; none given: all) of each agent; its lease stops counting it."""
    out = []
    for adw_id in ids:
        state.require(settings, adw_id)
        with locks.locked(settings.lock_path(f"up-{adw_id}"), settings.lock_timeout,
                          f"{adw_id}'s services are being started"):
            out += stop_services(settings, adw_id, names or None)
            record_running(settings, adw_id)
    return out


# ---------------------------------------------------------------------------------------------
# ps and logs


def agents_with_services(settings: Settings) -> list[str]:
    return [i for i in state.all_ids(settings) if (state.load(settings, i) or {}).get("services")]


def ps(settings: Settings, ids: list[str]) -> list[dict]:
    """One row per recorded service: pid, port, health (up, down, running, exited), uptime, log."""
    rows = []
    now = time.time()
    for adw_id in ids:
        s = state.require(settings, adw_id)
        for name, rec in sorted((s.get("services") or {}).items()):
            health = _health(rec)
            began = state.parse_time(rec.get("started_at"))
            rows.append({"adw_id": adw_id, "service": name, "pid": rec["pid"], "port_var": rec.get("port_var"),
                         "port": rec.get("port"), "health": health,
                         "uptime": max(0, round(now - began)) if health != "exited" and began else None,
                         "log": rec["log"], "command": rec.get("command")})
    return rows


def print_ps(rows: list[dict]) -> None:
    if not rows:
        print("no services recorded (start them with `grove up --adw-id ID`)")
        return
    for r in rows:
        uptime = f"{r['uptime']:.0f}s" if r["uptime"] is not None else "-"
        port = f"{r['port_var']}={r['port']}" if r["port"] else "-"
        print(f"{r['adw_id']:<16} {r['service']:<12} {r['health']:<8} pid {r['pid']:<8} {port:<22} up {uptime:<8} {r['log']}")


def logs(settings: Settings, adw_id: str, names: list[str], *, follow: bool = False, lines: int = 50,
         write: Callable[[str], object] = sys.stdout.write, stop: Callable[[], bool] = lambda: False) -> None:
    """Print the last ``lines`` lines of each service's log (prefixed by its name when several);
    ``follow``: then what they append, until interrupted."""
    s = state.require(settings, adw_id)
    known = set((s.get("services") or {})) | {svc.name for svc in _declared(settings, s)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise bad_input(f"{adw_id} has no service {', '.join(unknown)}", f"its services: {', '.join(sorted(known)) or 'none'}")
    chosen = sorted(n for n in (names or known) if log_path(settings, adw_id, n).exists())
    if not chosen:
        raise GroveError(f"{adw_id} has no service logs yet", hint=f"start them: grove up --adw-id {adw_id}")
    prefix = len(chosen) > 1
    offsets = {}
    for name in chosen:
        path = log_path(settings, adw_id, name)
        for line in execute.log_tail(path, 65536).splitlines()[-lines:] if lines else []:  # [-0:] is all
            write(f"{name} | {line}\n" if prefix else f"{line}\n")
        offsets[name] = path.stat().st_size
    while follow and not stop():
        for name in chosen:
            offsets[name] = _follow(log_path(settings, adw_id, name), offsets[name], name if prefix else None, write)
        sys.stdout.flush()
        time.sleep(0.2)


def _declared(settings: Settings, s: dict) -> list[Service]:
    try:
        return services_of(settings, s, [])
    except GroveError:
        return []


def _follow(path: Path, offset: int, prefix: str | None, write: Callable[[str], object]) -> int:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < offset:
                offset = 0  # truncated: start again
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1  # whole lines only; the rest next time
    for line in data[:end].decode(errors="replace").splitlines():
        write(f"{prefix} | {line}\n" if prefix else f"{line}\n")
    return offset + end
