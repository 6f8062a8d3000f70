"""`inv list --watch`: a live table of every agent, refreshed about once a second, until Ctrl-C.

Per agent: status, branch, commits ahead of the base, dirty files, whether its ports are listening,
the running `inv exec` and its last log line, and age. Gathering is plain data (``snapshot``);
drawing is rich's (``render``), imported only here: it is the optional `watch` extra, and Grove
writes no terminal control codes of its own. On a pipe each refresh prints a plain frame.
"""

from __future__ import annotations

import io
import shlex
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import git, liveness, portable, state
from . import queries
from ..core.config import Settings
from ..core.errors import GroveError, bad_input

if TYPE_CHECKING:
    from rich.console import JustifyMethod

STATUS_STYLE = {"created": "dim", "assigned": "cyan", "in_progress": "yellow", "completed": "green",
                "failed": "red", "conflict": "magenta", "merged": "blue", "cleaned": "dim"}


def require_rich() -> None:
    from ..core.hints import install_extra  # issue 21: the hint fits how Grove was installed

    try:
        import rich  # noqa: F401
    except ImportError:
        raise bad_input("inv list --watch needs the rich package",
                        install_extra("watch", "rich")) from None


# ---------------------------------------------------------------------------------------------
# Gathering


def listening(port: int, timeout: float = 0.2) -> bool:
    """Something accepts connections on ``port`` at 127.0.0.1 or ::1 (a connect, never a bind)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                if sock.connect_ex((host, port)) == 0:
                    return True
        except OSError:
            continue
    return False


def _base_ref(settings: Settings, s: dict) -> str | None:
    return git.base_ref(settings.repo, settings.remote, s.get("base_branch") or settings.base_branch) \
        or s.get("base_commit")


def _quietly(ask, default=None):
    """A frame shows what it can: a broken worktree is a '-' in its row, not a crash (inv doctor says why)."""
    try:
        return ask()
    except GroveError:
        return default


def _row(settings: Settings, s: dict, now: float) -> dict[str, Any]:
    path = Path(s["worktree_path"])
    branch = f"refs/heads/{s['branch']}"
    base = _base_ref(settings, s)
    ahead = None
    if base and git.branch_exists(settings.repo, s["branch"]):
        ahead = _quietly(lambda: int(git.git(settings.repo, "rev-list", "--count", f"{base}..{branch}", "--")))
    dirty = _quietly(lambda: len(git.dirty_files(path))) if s.get("exists") and s.get("git") else None
    running = s.get("running_exec")
    exec_info = None
    if running:
        from ..resources.agentdb import scrub
        from .execute import last_line

        pid = running.get("pid")
        exec_info = {"command": shlex.join(running.get("command") or []), "pid": pid,
                     "alive": liveness.holder_alive(running)  # not a reused pid (issue 20, item 12)
                              and portable.alive(int(pid), portable.process_backend(settings.process_backend)),
                     "last_line": scrub(settings, last_line(running.get("log")))}
    created = state.parse_time(s.get("created_at"))
    return {"adw_id": s["adw_id"], "status": s["status"], "branch": s["branch"], "ahead": ahead, "dirty": dirty,
            "ports": {name: (port, listening(port)) for name, port in (s.get("ports") or {}).items()},
            "exec": exec_info, "age": (now - created) if created else None, "healthy": s.get("exists") and s.get("git")}


def snapshot(settings: Settings, epic_id: str | None = None, status: str | None = None) -> list[dict]:
    """One row of plain data per agent, most recent first; git is asked in parallel, a few at a time."""
    agents = queries.list_agents(settings, epic_id=epic_id, status=status)
    now = time.time()
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(agents)))) as pool:
        return list(pool.map(lambda s: _row(settings, s, now), agents))


# ---------------------------------------------------------------------------------------------
# Drawing


def age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render(rows: list[dict], title: str = ""):
    """The table for one frame (a rich Table)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, title_justify="left", box=None, pad_edge=False, header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("ADW_ID", "left"), ("STATUS", "left"), ("BRANCH", "left"), ("AHEAD", "right"),
        ("DIRTY", "right"), ("PORTS", "left"), ("EXEC", "left"), ("AGE", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name != "EXEC", overflow="ellipsis")
    for r in rows:
        ports = Text()
        for name, (port, up) in r["ports"].items():
            ports.append(f"{port}", style="bold green" if up else "dim")
            ports.append(" up " if up else " -  ")
        run = r["exec"]
        if run:
            word = "running" if run["alive"] else "gone"
            cell = Text(f"{word} {run['command']}", style="yellow" if run["alive"] else "red")
            if run["last_line"]:
                cell.append(f" › {run['last_line']}", style="default")
        else:
            cell = Text("-", style="dim")
        table.add_row(r["adw_id"] + ("" if r["healthy"] else " (!)"), Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
                      r["branch"], "-" if r["ahead"] is None else str(r["ahead"]),
                      "-" if r["dirty"] is None else str(r["dirty"]), ports, cell, age(r["age"]))
    if not rows:
        table.add_row("no agents", "", "", "", "", "", "", "")
    return table


def title(settings: Settings, rows: list[dict]) -> str:
    running = sum(1 for r in rows if r["exec"] and r["exec"]["alive"])
    return f"{settings.repo}: {len(rows)} agent(s), {running} running, {time.strftime('%H:%M:%S')} (Ctrl-C stops)"


def frame_text(settings: Settings, width: int = 160, **filters: Any) -> str:
    """One frame as plain text: what a test (or a log) can read."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    rows = snapshot(settings, **filters)
    console.print(render(rows, title(settings, rows)))
    return console.export_text()


def watch(settings: Settings, interval: float = 1.0, **filters: Any) -> None:
    """Redraw until Ctrl-C. On a terminal rich's Live redraws in place; on a pipe each frame is printed."""
    require_rich()
    from rich.console import Console
    from rich.live import Live

    console = Console()

    def frame():
        rows = snapshot(settings, **filters)
        return render(rows, title(settings, rows))

    try:
        if console.is_terminal:
            with Live(frame(), console=console, auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(frame(), refresh=True)
        else:
            while True:
                console.print(frame())
                console.file.flush()
                time.sleep(interval)
    except KeyboardInterrupt:
        return
