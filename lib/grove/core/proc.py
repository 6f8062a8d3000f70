"""The one door for subprocesses: argument lists, a clean environment, captured output, a timeout.

Nothing here takes a shell string; user text never reaches a shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from .errors import GroveError

# Inherited from a hook or an outer git command, these would point every call at the wrong
# repository (pre-commit strips them for the same reason).
_GIT_LEAKS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
)

DEFAULT_TIMEOUT = 120.0
# What run_tree keeps of a command's output: only its tail is ever shown, and the whole of a verbose
# suite's log (gigabytes) read into memory and split into lines took ten times its size.
OUTPUT_KEPT = 64 * 1024


def clean_env(extra: Mapping[str, str] | None = None, inherit: bool = True) -> dict[str, str]:
    """The environment for a child: ``extra`` over os.environ (or, with ``inherit=False``, ``extra``
    alone: the only way to drop a variable such as Grove's own VIRTUAL_ENV), minus git's leaks."""
    source = os.environ if inherit else {}
    env = {k: v for k, v in source.items() if k not in _GIT_LEAKS}
    # Never let git stop and ask for a password or an editor in the middle of a chain.
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    env["GIT_EDITOR"] = "true"
    if extra:
        env.update({k: v for k, v in extra.items() if inherit or k not in _GIT_LEAKS})
    return env


def run(
    args: Sequence[str | os.PathLike],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    check: bool = True,
    what: str | None = None,
    input: str | None = None,
    inherit: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``args`` and capture its output; raise GroveError (exit 1) when it fails and ``check``.

    Output is decoded as UTF-8 with surrogate escapes: a file name that is not UTF-8 survives the
    round trip into git's arguments instead of raising UnicodeDecodeError mid-teardown.
    """
    argv = [os.fspath(a) for a in args]
    label = what or " ".join(argv[:3])
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=clean_env(env, inherit),
            stdin=None if input is not None else subprocess.DEVNULL,
            input=input,
            capture_output=True,
            encoding="utf-8",
            errors="surrogateescape",
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise GroveError(f"{argv[0]}: command not found", hint="install it or put it on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise GroveError(f"{label}: timed out after {timeout:.0f}s", hint=f"in {cwd or os.getcwd()}") from exc
    if check and result.returncode != 0:
        raise GroveError(f"{label} failed (exit {result.returncode}): {tail(result.stderr or result.stdout)}")
    return result


def tail(text: str, lines: int = 3) -> str:
    """The last few non-empty lines of some output, joined on one line."""
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"


def run_tree(args: Sequence[str | os.PathLike], *, cwd: str | Path, env: Mapping[str, str],
             timeout: float) -> tuple[int | None, str]:
    """Run a user's command (a validation) in its own session: (exit code or None on timeout, the
    output's last OUTPUT_KEPT bytes).

    stdout and stderr are one stream, in order, through a file: a process the command leaves behind
    (a server its suite started) would hold a pipe open, and the run with it, until it exits.
    When the command ends or times out, its process group, its tree and every process carrying the
    run's mark (a daemon that left the group) are stopped: a validation's tree is thrown away.
    ``env`` is the complete environment (git's leaks removed).
    """
    import tempfile

    from . import portable

    mark = portable.new_mark()
    with tempfile.TemporaryFile() as output, sigterm_interrupts():
        child = subprocess.Popen([os.fspath(a) for a in args], cwd=cwd,
                                 env={**clean_env(env, inherit=False), portable.MARK: mark},
                                 stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        exited = False
        try:
            exited = _wait_unreaped(child, timeout)
        finally:  # also on Ctrl-C: nothing the validation started outlives it
            portable.stop_tree(child, portable.process_backend(), grace=0, mark=mark)  # reaps it, last
        return (child.returncode if exited else None), _tail_of(output, OUTPUT_KEPT)


def _tail_of(handle, size: int) -> str:
    """The last ``size`` bytes of a file from its first whole line on, as text."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    handle.seek(max(0, end - size))
    data = handle.read()
    if end > size:  # the first line is cut: drop it (a secret cut in two would escape the scrub),
        _, newline, rest = data.partition(b"\n")  # unless the tail is all one line
        data = rest if newline else data
    return data.decode("utf-8", errors="replace")


def _wait_unreaped(child: subprocess.Popen, timeout: float) -> bool:
    """True once ``child`` has exited, False after ``timeout``; it is left unreaped (a zombie).

    Its pid is also the id of the process group stop_tree signals next: reaped first (Popen.wait),
    that pid may be handed to another process, such as another agent's `inv exec` command, which
    leads a session of its own, and the stop would then kill that process's whole group."""
    import time

    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(0.02, left))
    return True


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a CI runner cancelling the job, `timeout`, `kill`) behaves like Ctrl-C meanwhile: it
    raises KeyboardInterrupt, so the cleanup in ``finally`` runs. Python's default would end Grove at
    once and leave a command started in a session of its own (a validation) running forever."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def in_parallel(jobs: list) -> list:
    """Run ``jobs`` at once, one thread each (they wait on subprocesses); results or exceptions, in order."""
    if len(jobs) == 1:
        return [_call(jobs[0])]
    out: list = [None] * len(jobs)

    def run(i: int) -> None:
        out[i] = _call(jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _call(job):
    try:
        return job()
    except BaseException as exc:  # noqa: BLE001 - handed back to the caller, which raises it
        return exc
