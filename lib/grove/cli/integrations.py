"""Grove for agents and their tools (issue 22): the event stream, adopting worktrees, Claude Code's
hooks and the MCP server."""

from __future__ import annotations

import json as _json
import sys

from invoke import task

from .common import ID, JSON, QUIET, REPO, emit, guard, load_settings, reporter


@task(
    help={
        "follow": "keep reading: print each new event as it is appended (polled every --interval seconds) "
                  "until Ctrl-C or SIGTERM; without --since only events from now on",
        "since": "only events at or after this time: ISO 8601 (2026-12-04T21:00:00Z; naive is UTC) or an age "
                 "(90s, 15m, 2h, 1d)",
        "adw_id": "only this agent's events",
        "interval": "with --follow: seconds between polls (0.05..5, default 0.25)",
        "repo": REPO,
        "json": JSON + "; with --follow, one JSON document per line (JSON Lines)",
    },
)
@guard
def events(c, follow=False, since=None, adw_id=None, interval=None, repo=None, json=False):
    """Show the lifecycle event stream (agents/.grove/events.jsonl), or --follow it.

    One line per change: created, status, merged, conflict, cleaned, salvaged, torn_down, archived,
    adopted, restored, rolled_back; each with time, adw_id, from, to, by (pid, command) and details.
    """
    from ..core import events as stream, numbers
    from ..core.ids import check_id

    settings = load_settings(c, repo)
    when = stream.parse_since(since) if since else None
    if adw_id:
        check_id(adw_id)
    if not follow:
        emit(stream.read(settings, when, adw_id), json, lambda rows: [print(_line(r)) for r in rows])
        return
    # A string flag, parsed by the one validator: Invoke's own float cast ends in a traceback on a
    # typo, and a bare float() let nan through to time.sleep().
    interval = 0.25 if interval in (None, "") else float(numbers.parse(interval, "--interval", numbers.SECONDS))
    stopping = _stop_on_sigterm()
    try:
        for doc in stream.follow(settings, when, adw_id, interval=interval, stop=stopping.is_set):
            print(_json.dumps(doc, default=str) if json else _line(doc), flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follow ends: exit 0


def _stop_on_sigterm():
    """SIGTERM ends a follow cleanly (exit 0) at its next poll, like Ctrl-C."""
    import signal
    import threading

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    return stopping


def _line(doc: dict) -> str:
    change = f"{doc.get('from') or '-'} -> {doc.get('to') or '-'}"
    details = " ".join(f"{k}={v}" for k, v in (doc.get("details") or {}).items())
    return f"{doc.get('time')}  {doc.get('adw_id'):<12} {doc.get('event'):<10} {change:<26} {details}".rstrip()


@task(
    positional=["path"],
    help={
        "path": "the linked worktree to adopt (made by `git worktree add`, an IDE or another tool)",
        "adw_id": ID + "; default: made from the directory's name (-2, -3 ... on a collision); inside the "
                       "trees directory it is the directory's name",
        "install": "install dependencies (uv, bun); --no-install skips",
        "db": "create the agent's Postgres database and run the reset script; --no-db skips",
        "dry_run": "validate the worktree and the id and say what would be done; change nothing",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@guard
def adopt(c, path=None, adw_id=None, install=True, db=True, dry_run=False, repo=None, json=False, quiet=False):
    """Make an existing linked worktree a Grove agent: ports, env files, configs, installs, db, a state.

    Its files and branch are left as they are, and the branch is never recorded as Grove's, so no
    Grove command deletes it. Teardown releases Grove's resources and archives the state; a worktree
    outside the trees directory stays in place. Adopting it again finishes what is missing.
    """
    from ..core.errors import bad_input
    from ..ops import adopt as adopting
    from .agents import print_ready

    if not path:
        raise bad_input("give the worktree's path", "grove adopt PATH [--adw-id X]")
    settings = load_settings(c, repo)
    result = adopting.adopt(settings, path, adw_id, install=install, db=db, dry_run=dry_run, report=reporter(quiet))
    emit(result, json, _print_plan if dry_run else print_ready)


def _print_plan(d: dict) -> None:
    print(f"would {d['action']} {d['worktree_path']} as {d['adw_id']} on {d['branch']}: {', '.join(d['steps'])}")


@task(
    positional=["client"],
    help={
        "client": "whose hook this is: claude-code (WorktreeCreate and WorktreeRemove)",
        "repo": REPO + "; default: the payload's cwd",
    },
)
@guard
def hook(c, client=None, repo=None):
    """Serve a coding agent's worktree hook, reading its JSON payload on stdin: grove hook claude-code.

    WorktreeCreate: Grove's whole setup for an agent named after the session; the worktree path is
    the only line on stdout (progress on stderr). WorktreeRemove: Grove's teardown, uncommitted work
    salvaged under refs/grove-salvage/ and the branch kept. Errors: stderr and a non-zero exit.
    """
    import os

    from ..core.errors import bad_input
    from ..ops import claude

    if client != "claude-code":
        raise bad_input(f"unknown hook client {client!r}", "grove hook claude-code")
    payload = claude.parse(sys.stdin.read(1 << 20))
    settings = load_settings(c, repo or claude.repo_of(payload))
    report = reporter(False)
    with _stdout_on_stderr():  # whatever setup or a tool it runs prints must not reach the CLI's stdout
        if payload["hook_event_name"] == "WorktreeCreate":
            path = claude.create(settings, payload, report)
        else:
            claude.remove(settings, payload, report)
            return
    os.write(1, f"{path}\n".encode())


def _stdout_on_stderr():
    """fd 1 points at stderr for the duration (and back after): the CLI reads stdout as the path."""
    import contextlib
    import os

    @contextlib.contextmanager
    def redirected():
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)

    return redirected()


@task(help={"repo": REPO})
@guard
def mcp(c, repo=None):
    """Serve Grove over MCP on stdio (needs the `mcp` extra): claude mcp add grove -- grove mcp.

    Tools mirror the tasks (setup, list, status, set_status, run, merge, sync, conflicts, teardown,
    salvage, pool, events) with the flags' names as arguments, each returning the task's --json
    document; resources grove://agents/{adw_id}/state and .../logs. See docs/agents.md.
    """
    from .mcpserver import serve

    serve(repo)
