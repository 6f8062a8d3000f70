"""Progress on stderr: one line per step with its duration; a live elapsed line on a terminal.

stdout is kept for results (``--json`` prints exactly one document there).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .faults import fault
from .hints import speak

# One line at a time on the shared stream: print() writes the text and the newline separately, so
# the agents of one setup_many (heads in the main thread, tails in workers) spliced their lines.
_WRITE = threading.Lock()


class Reporter:
    def __init__(self, quiet: bool = False, prefix: str = "", stream=None):
        self.quiet = quiet
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty() and not quiet

    def for_agent(self, adw_id: str) -> "Reporter":
        return Reporter(self.quiet, f"[{adw_id}] ", self.stream)

    def say(self, text: str) -> None:
        if not self.quiet:
            self._line(f"{self.prefix}{speak(text)}\n")

    def warn(self, text: str) -> None:
        # Warnings show even with --quiet: they tell the user about something Grove did not do.
        self._line(f"{self.prefix}warning: {speak(text)}\n")

    def _line(self, text: str) -> None:
        with _WRITE:
            self.stream.write(text)
            self.stream.flush()

    @contextmanager
    def step(self, name: str, op: str, outcomes: dict | None = None, long: bool = False) -> Iterator[dict]:
        """Time one step, print its line, record ``{"outcome", "seconds"}`` in ``outcomes``.

        The body may set ``info["outcome"]`` ("skipped", "reused" ...) and ``info["detail"]``.
        """
        fault(op, "before", name)
        info = {"outcome": "done", "detail": ""}
        start = time.monotonic()
        ticker = self._ticker(name, start) if long and self.live else None
        try:
            yield info
        except BaseException:
            info["outcome"] = "failed"
            raise
        finally:
            if ticker:
                ticker.set()
            seconds = round(time.monotonic() - start, 3)
            if outcomes is not None:
                outcomes[name] = {"outcome": info["outcome"], "seconds": seconds}
            detail = f"  {info['detail']}" if info["detail"] else ""
            self.say(f"{'✗' if info['outcome'] == 'failed' else '✓'} {name:<10} {info['outcome']:<8} {seconds:6.2f}s{detail}")
        fault(op, "after", name)

    def _ticker(self, name: str, start: float) -> threading.Event:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                self._line(f"\r{self.prefix}… {name:<10} {time.monotonic() - start:6.1f}s")
            self._line("\r\033[K")

        threading.Thread(target=tick, daemon=True).start()
        return stop

