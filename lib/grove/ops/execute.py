"""`inv exec`: one command fanned out over agents' worktrees, at most N at a time, logged and recorded.

Each run gets what `inv run` gives a command (the worktree as cwd, its env files and ports, ADW_ID,
ADW_WORKTREE, ADW_BRANCH, Grove's own venv off PATH), no shell, its stdout and stderr in
agents/<id>/logs/<utc>.log, and a session of its own so its whole process tree can be stopped.
While it runs the agent is `in_progress`; then `completed` (exit 0) or `failed` (exit code and log
tail in error_message), and a WorktreeExecutionResult is appended to the state's `executions`.
A timeout, Ctrl-C or SIGTERM stops each tree (and every process carrying the run's GROVE_RUN_MARK,
a daemon that left it included): SIGTERM, then SIGKILL after ADW_STOP_GRACE seconds;
interrupted runs are recorded as failed, runs that had not started yet are left untouched.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..resources import agentdb
from . import agentrun
from ..core import liveness, locks, numbers, portable, proc, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.models import WorktreeExecutionResult

if TYPE_CHECKING:
    from rich.live import Live  # the optional `watch` extra, imported at run time only when used

TAIL_LINES = 5
EXECUTIONS_KEPT = 100  # the state keeps the latest runs, like `history`
BLOCKED = ("merged", "cleaned")  # statuses that cannot go back to in_progress (state.TRANSITIONS)


@dataclass
class Run:
    """One agent's run, as the workers and the live display see it."""

    adw_id: str
    worktree: Path
    env: dict[str, str]
    program: str
    phase: str = "queued"  # queued, running, done, not_started
    log: Path | None = None
    pid: int | None = None
    began: float = 0.0  # monotonic
    result: dict | None = None
    error: str | None = None  # a failure of Grove's own bookkeeping, said after the run
    mark: str = field(default_factory=portable.new_mark)  # in the command's env: finds what escaped its tree


@dataclass
class Outcome:
    command: list[str]
    jobs: int
    timeout: float | None
    runs: list[Run] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.result and r.result["exit_code"] == 0 and not r.result["timed_out"]
                                            for r in self.runs)

    def to_dict(self) -> dict:
        return {"command": self.command, "jobs": self.jobs, "timeout": self.timeout, "interrupted": self.interrupted,
                "results": [r.result for r in self.runs if r.result],
                "not_started": [r.adw_id for r in self.runs if r.result is None]}


# ---------------------------------------------------------------------------------------------
# Choosing and checking, before anything changes


def select(settings: Settings, ids: list[str], epic: str | None, all_: bool) -> tuple[list[str], list[str]]:
    """(ids to run in, notes on agents --epic/--all passed over); bad input when the choice is unclear."""
    if ids and (epic or all_):
        raise bad_input("give --adw-id, or --epic, or --all; not several")
    if ids:
        return list(dict.fromkeys(ids)), []
    if not (epic or all_):
        raise bad_input("say where to run: --adw-id ID (repeatable), --epic E, or --all", "inv exec --all -- CMD ARGS")
    chosen, notes = [], []
    for adw_id in state.all_ids(settings):
        s = state.load(settings, adw_id)
        if s is None:  # torn down by another process since all_ids() listed it
            continue
        if epic and s.get("epic_id") != epic:
            continue
        if s["status"] in BLOCKED:
            notes.append(f"{adw_id} is {s['status']}: not run")
        elif not Path(s["worktree_path"]).is_dir():
            notes.append(f"{adw_id} has no worktree: not run (see `inv doctor`)")
        else:
            chosen.append(adw_id)
    if not chosen:
        passed = f" ({'; '.join(notes)})" if notes else ""
        raise bad_input(f"no agent to run in{f' in epic {epic}' if epic else ''}{passed}", "see `inv list`")
    return chosen, notes


def prepare(settings: Settings, ids: list[str], argv: list[str]) -> list[Run]:
    """One Run per agent; refuses (exit 2, nothing changed) a status that cannot go to in_progress,
    a missing worktree, or a command that is not there."""
    if not argv:
        raise bad_input("no command given", "inv exec --adw-id X -- CMD ARGS...")
    runs = []
    for adw_id in ids:
        s = state.require(settings, adw_id)
        if s["status"] in BLOCKED:
            raise bad_input(f"{adw_id} is {s['status']}; inv exec runs only in agents that can go to in_progress")
        worktree = Path(s["worktree_path"])
        if not worktree.is_dir():
            raise bad_input(f"{adw_id} has no worktree at {worktree}", "run `inv doctor`, or set it up again")
        env = agentrun.command_env(s)
        program = agentrun.resolve_program(argv[0], worktree, env)
        if program is None:
            raise bad_input(f"{argv[0]}: command not found in {adw_id}'s worktree (cwd {worktree}, PATH without "
                            "Grove's own venv)", "give a path, or put the command on PATH")
        runs.append(Run(adw_id, worktree, env, program))
    return runs


# ---------------------------------------------------------------------------------------------
# Running


def execute(settings: Settings, ids: list[str], argv: list[str], *, jobs: int | None = None,
            timeout: float | None = None, display: "Display | None" = None) -> Outcome:
    """Run ``argv`` in each agent's worktree, ``jobs`` at a time; returns every run's outcome.

    Ctrl-C (KeyboardInterrupt) or SIGTERM stops every running tree, records those runs as failed,
    starts no more, and returns with ``interrupted`` set: the caller decides how to exit.
    """
    # The one validator (issue 20, item 11): a nan timeout passed `timeout <= 0` here.
    jobs = int(numbers.parse(jobs, "--jobs", numbers.COUNT)) if jobs is not None else None
    timeout = numbers.parse(timeout, "--timeout", numbers.SECONDS) if timeout is not None else None
    runs = prepare(settings, ids, argv)
    backend = portable.process_backend(settings.process_backend)
    outcome = Outcome(list(argv), jobs or len(runs), timeout, runs)
    display = display or Display(mode="off")
    display.scrub = lambda text: agentdb.scrub(settings, text)  # a log line may print DATABASE_URL
    with ExitStack() as stack:
        for run in runs:  # one exec per agent at a time; a busy one stops the whole call before it starts
            stack.enter_context(locks.locked(settings.lock_path(f"exec-{run.adw_id}"), 0,
                                             f"{run.adw_id} is already running an inv exec"))
        stack.enter_context(proc.sigterm_interrupts())
        job = _Job(settings, argv, timeout, backend, display)
        display.start(runs)
        try:
            outcome.interrupted = job.run_all(runs, outcome.jobs)
        finally:
            display.stop()
    return outcome


class _Job:
    def __init__(self, settings: Settings, argv: list[str], timeout: float | None, backend: str, display: "Display"):
        self.settings, self.argv, self.timeout, self.backend, self.display = settings, argv, timeout, backend, display
        self.stop = threading.Event()  # Ctrl-C: stop every run, start no more
        self.hurry = threading.Event()  # a second Ctrl-C: SIGKILL without waiting out the grace

    def run_all(self, runs: list[Run], jobs: int) -> bool:
        interrupted = False
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grove-exec") as pool:
            futures = [pool.submit(self.one, run) for run in runs]
            pending = set(futures)
            while pending:
                try:
                    _, pending = wait(pending, timeout=0.25)
                    self.display.refresh()
                except KeyboardInterrupt:
                    if interrupted:
                        self.hurry.set()
                    interrupted = True
                    self.stop.set()
                    self.display.say("interrupted: stopping every run (SIGTERM, then SIGKILL); Ctrl-C again to hurry")
        for future in futures:
            future.result()  # a bug in a worker surfaces here, after every run has been stopped
        return interrupted

    def one(self, run: Run) -> None:
        if self.stop.is_set():
            run.phase = "not_started"
            return
        run.log = new_log(self.settings, run.adw_id)
        started_at = datetime.now(timezone.utc)
        run.began = time.monotonic()
        with open(run.log, "ab") as out:
            try:
                popen = subprocess.Popen(self.argv, executable=run.program, cwd=run.worktree,
                                         env={**run.env, portable.MARK: run.mark},
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            except OSError as exc:  # not executable, bad interpreter line ...
                out.write(f"grove: cannot start {self.argv[0]}: {exc.strerror or exc}\n".encode())
                popen = None
        run.pid, run.phase = (popen.pid if popen else None), "running"
        self.display.started(run)
        how, code = "exited", 126
        try:
            if popen is not None:
                self._mark_running(run, started_at)
                how, code = self._wait(popen, run)
        except BaseException as exc:
            if popen is not None and popen.poll() is None:
                portable.stop_tree(popen, self.backend, self.settings.stop_grace, self.hurry.is_set, run.mark)
                how, code = "interrupted", _exit_code(popen.returncode)
            run.error = getattr(exc, "message", None) or repr(exc)
        finished_at = datetime.now(timezone.utc)
        seconds = round(time.monotonic() - run.began, 3)
        result = WorktreeExecutionResult(run.adw_id, list(self.argv), code, started_at, finished_at, seconds,
                                         str(run.log), timed_out=how == "timed_out").to_dict()
        run.result = result
        try:
            self._record(run, how, result)
        except GroveError as exc:
            run.error = exc.message
        run.phase = "done"
        self.display.finished(run, how)

    def _wait(self, popen: subprocess.Popen, run: Run) -> tuple[str, int]:
        deadline = run.began + self.timeout if self.timeout else None
        while True:
            try:
                return "exited", _exit_code(popen.wait(timeout=0.1))
            except subprocess.TimeoutExpired:
                pass
            if self.stop.is_set():
                how = "interrupted"
            elif deadline is not None and time.monotonic() >= deadline:
                how = "timed_out"
            else:
                continue
            # The command has not been reaped, so its pid (the group id) cannot be reused meanwhile.
            portable.stop_tree(popen, self.backend, self.settings.stop_grace, self.hurry.is_set, run.mark)
            return how, _exit_code(popen.returncode)

    def _mark_running(self, run: Run, started_at: datetime) -> None:
        def change(s: dict) -> None:
            state.apply_status(s, "in_progress", by="grove exec")
            # pid and start time: `list --watch` must not call a reused pid this run (issue 20, item 12)
            s["running_exec"] = {**liveness.stamp(run.pid), "command": list(self.argv), "log": str(run.log),
                                 "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ")}

        state.update(self.settings, run.adw_id, change)

    def _record(self, run: Run, how: str, result: dict) -> None:
        """One locked update: the result appended, the status set, the branch's commits refreshed."""
        if how == "exited" and result["exit_code"] == 0:
            target, error = "completed", None
        else:
            target, why = "failed", f"exit {result['exit_code']}"
            if how == "timed_out":
                why = f"timed out after {self.timeout:g}s ({why})"
            elif how == "interrupted":
                why = f"interrupted ({why})"
            # The log is the agent's (0600); what reaches the state and stderr never holds a password.
            said_tail = agentdb.scrub(self.settings, proc.tail(log_tail(run.log), TAIL_LINES))
            error = f"inv exec {shlex.join(self.argv)}: {why}; log {run.log}: {said_tail}"
        refresh = state._commit_refresher(self.settings)
        said = []

        def change(s: dict) -> None:
            executions = s.setdefault("executions", [])
            executions.append(result)
            del executions[:-EXECUTIONS_KEPT]
            if (s.get("running_exec") or {}).get("pid") == run.pid:
                s.pop("running_exec", None)
            try:
                state.apply_status(s, target, by="grove exec", error=error)
            except GroveError as exc:  # someone moved the status meanwhile: keep theirs, say so
                said.append(f"status left at {s['status']} ({exc.message})")
            refresh(s)

        state.update(self.settings, run.adw_id, change)
        if said:
            run.error = said[0]


def _exit_code(returncode: int) -> int:
    """A signal's death as the shell shows it: 128 + the signal number (SIGTERM: 143, SIGKILL: 137)."""
    return 128 - returncode if returncode < 0 else returncode


def new_log(settings: Settings, adw_id: str) -> Path:
    """agents/<id>/logs/<utc>.log, created exclusively (a second run in the same second gets -2, -3 ...)."""
    logs = settings.agents_path / adw_id / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 1000):
        path = logs / (f"{stamp}.log" if n == 1 else f"{stamp}-{n}.log")
        try:
            # 0600: a command's output can hold whatever its env holds (DESIGN.md: env values stay private).
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return path
        except FileExistsError:
            continue
    raise GroveError(f"too many logs named {stamp}* in {logs}")


def log_tail(path: Path | str | None, size: int = 8192) -> str:
    """The end of a log (the last ``size`` bytes), as text."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def last_line(path: Path | str | None, width: int = 60) -> str:
    lines = [line.strip() for line in log_tail(path, 2048).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------
# What the user sees: a live line per agent on a terminal (rich), else one line per start and end


class Display:
    """Progress on stderr. ``mode``: "live" (rich, a terminal), "lines", or "off" (--quiet, --json on a pipe)."""

    def __init__(self, mode: str = "off", stream=None):
        self.mode, self.stream = mode, stream or sys.stderr
        self.scrub: Callable[[str], str] = lambda text: text
        self.runs: list[Run] = []
        self.live: Live | None = None
        self.lock = threading.Lock()

    @classmethod
    def choose(cls, quiet: bool, stream=None) -> "Display":
        stream = stream or sys.stderr
        if quiet:
            return cls("off", stream)
        if getattr(stream, "isatty", lambda: False)():
            try:
                import rich  # noqa: F401  (the optional `watch` extra)

                return cls("live", stream)
            except ImportError:
                pass
        return cls("lines", stream)

    def start(self, runs: list[Run]) -> None:
        self.runs = runs
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self.table(), console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()

    def table(self):
        from rich.table import Table

        table = Table(box=None, show_header=True, pad_edge=False)
        for name in ("ADW_ID", "STATE", "SECONDS", "LAST LINE"):
            table.add_column(name)
        for run in self.runs:
            seconds = run.result["seconds"] if run.result else (time.monotonic() - run.began if run.began else 0.0)
            table.add_row(run.adw_id, _state_word(run), f"{seconds:.1f}", self.scrub(last_line(run.log)))
        return table

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
            self.live.stop()
            self.live = None

    def say(self, text: str) -> None:
        if self.mode == "off":
            return
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            with self.lock:
                print(text, file=self.stream, flush=True)

    def started(self, run: Run) -> None:
        if self.mode == "lines":
            self.say(f"▶ {run.adw_id:<12} running  (log {run.log})")

    def finished(self, run: Run, how: str) -> None:
        if self.mode == "lines":
            self.say(f"{'✓' if _state_word(run) == 'ok' else '✗'} {run.adw_id:<12} {_state_word(run):<10} "
                     f"{run.result['seconds'] if run.result else 0:6.2f}s  {self.scrub(last_line(run.log))}")
        if run.error:
            print(f"warning: {run.adw_id}: {run.error}", file=self.stream, flush=True)


def _state_word(run: Run) -> str:
    if run.result is None:
        return {"queued": "queued", "not_started": "not run"}.get(run.phase, "running")
    if run.result["timed_out"]:
        return "timed out"
    return "ok" if run.result["exit_code"] == 0 else f"exit {run.result['exit_code']}"


def print_outcome(outcome: dict) -> None:
    """The human summary on stdout: one line per run."""
    print(f"{'ADW_ID':<12} {'RESULT':<10} {'SECONDS':>8}  LOG")
    for r in outcome["results"]:
        word = "timed out" if r["timed_out"] else ("ok" if r["exit_code"] == 0 else f"exit {r['exit_code']}")
        print(f"{r['adw_id']:<12} {word:<10} {r['seconds']:8.2f}  {r['log']}")
    for adw_id in outcome["not_started"]:
        print(f"{adw_id:<12} {'not run':<10} {'':>8}  -")
    good = sum(r["exit_code"] == 0 and not r["timed_out"] for r in outcome["results"])
    total = len(outcome["results"]) + len(outcome["not_started"])
    print(f"exec {shlex.join(outcome['command'])}: {good} of {total} succeeded"
          + (" (interrupted)" if outcome["interrupted"] else ""))


OUTPUT_LIMIT = 16 * 1024  # what `run_bounded` hands back of the output: its end (the log keeps all of it)
RUN_TIMEOUT_MAX = 3600.0


def run_bounded(settings: Settings, adw_id: str, argv: list[str], timeout: float = 600.0,
                limit: int = OUTPUT_LIMIT) -> dict:
    """Run ``argv`` (no shell) in the agent's worktree with its env and ports, as `grove run` does,
    but as a child with a timeout and bounded output: the MCP server's `run` tool (issue 22).

    stdout and stderr go to agents/<id>/logs/<utc>.log (like `grove exec`); the result carries the
    last ``limit`` bytes. On timeout the command's whole process tree is stopped. The agent's status
    is not changed (`grove exec` is the one that records runs).
    """
    if not argv or not all(isinstance(a, str) for a in argv):
        raise bad_input("no command given", "give the command as a list of strings, e.g. [\"make\", \"test\"]")
    if not 0 < timeout <= RUN_TIMEOUT_MAX:
        raise bad_input(f"timeout {timeout} is outside 0..{RUN_TIMEOUT_MAX:.0f} seconds")
    s = state.require(settings, adw_id)
    path = Path(s["worktree_path"])
    if not path.is_dir():
        raise GroveError(f"{adw_id} has no worktree at {path}", hint="run `grove doctor`, or set it up again")
    env = agentrun.command_env(s)
    program = agentrun.resolve_program(argv[0], path, env)
    if program is None:
        raise GroveError(f"{argv[0]}: command not found (cwd {path})", code=127)
    log, mark = new_log(settings, adw_id), portable.new_mark()
    began, timed_out = time.monotonic(), False
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, executable=program, cwd=path, env={**env, portable.MARK: mark},
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if popen.poll() is None:  # timed out, or this process is being stopped: the tree goes too
                portable.stop_tree(popen, portable.process_backend(settings.process_backend), settings.stop_grace,
                                   mark=mark)
            code = popen.returncode
    size = log.stat().st_size
    return {"adw_id": adw_id, "command": list(argv), "exit_code": _exit_code(code), "timed_out": timed_out,
            "seconds": round(time.monotonic() - began, 3), "log": str(log), "output": log_tail(log, limit),
            "truncated": size > limit, "cwd": str(path)}
