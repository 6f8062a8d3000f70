"""An agent's running app (issue 23): up, down, ps, logs over the repository's Procfile."""

from __future__ import annotations

import sys

from invoke import Exit, task

from .common import ID, JSON, QUIET, REPO, emit, guard, load_settings, one, reporter

SERVICE = "a service of the Procfile; repeatable (default: every one). Names after `--` count too"


def _names(c, service) -> list[str]:
    """--service NAME (repeatable) and the names after `--`: `grove up --adw-id X -- web worker`."""
    import shlex

    after = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else shlex.split(c.remainder or "")
    return list(dict.fromkeys([*(service or []), *after]))


def _ids(settings, adw_id, all_) -> list[str]:
    from ..core.errors import bad_input
    from ..ops import services

    ids = list(dict.fromkeys(adw_id or []))
    if ids and all_:
        raise bad_input("give --adw-id or --all, not both")
    if ids:
        return ids
    if not all_:
        raise bad_input("say which agent: --adw-id ID (repeatable) or --all")
    return services.agents_with_services(settings) if all_ == "recorded" else _runnable(settings)


def _runnable(settings) -> list[str]:
    from ..ops import execute

    return execute.select(settings, [], None, True)[0]


@task(
    iterable=["adw_id", "service"],
    help={
        "adw_id": ID + "; repeatable",
        "all": "every agent that has a worktree and is not merged or cleaned",
        "service": SERVICE,
        "timeout": "seconds each declared port may take to accept connections (default 30); with --wait, "
                   "also how long to wait for a place under ADW_MAX_RUNNING",
        "wait": "over ADW_MAX_RUNNING, wait (saying so on stderr) up to --timeout seconds instead of exiting 1",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@guard
def up(c, adw_id=None, all=False, service=None, timeout=30.0, wait=False, repo=None, json=False, quiet=False):
    """Start an agent's services from the Procfile, on its ports, and wait until they accept connections.

    Each runs in the worktree with the env `grove run` exports, in its own process group, its output
    in agents/<id>/logs/<service>.log. A service that exits or does not open its port within
    --timeout is stopped, and up exits 1 with the last lines of its log. Over ADW_MAX_RUNNING
    running agents (machine-wide) it exits 1 at once, or waits with --wait.
    """
    from ..ops import services

    settings = load_settings(c, repo)
    report = reporter(quiet or json)
    result = services.up(settings, _ids(settings, adw_id, all), _names(c, service), timeout=timeout, wait=wait,
                         report=report)
    emit(result, json, _print_up)
    for err in result["errors"]:
        print(f"grove: {err['error']}" + (f"\n  hint: {err['hint']}" if err["hint"] else ""), file=sys.stderr)
    if result["errors"]:
        raise Exit(code=max(e["exit_code"] for e in result["errors"]))


def _print_up(result: dict) -> None:
    for agent in result["agents"]:
        for r in agent["services"]:
            port = f"{r['port_var']}={r['port']} accepts connections" if r["port"] else "no port declared"
            print(f"{r['adw_id']} {r['service']}: pid {r['pid']}, {port}"
                  + (" (already up)" if r["outcome"] == "already_up" else "") + f"; log {r['log']}")


@task(
    iterable=["adw_id", "service"],
    help={"adw_id": ID + "; repeatable", "all": "every agent with services recorded", "service": SERVICE,
          "repo": REPO, "json": JSON},
)
@guard
def down(c, adw_id=None, all=False, service=None, repo=None, json=False):
    """Stop an agent's services (their whole process groups) and forget them."""
    from ..ops import services

    settings = load_settings(c, repo)
    rows = services.down(settings, _ids(settings, adw_id, "recorded" if all else False), _names(c, service))
    emit(rows, json, _print_down)


def _print_down(rows: list[dict]) -> None:
    if not rows:
        print("nothing to stop")
    for r in rows:
        print(f"{r['adw_id']} {r['service']}: " + (f"stopped pid {r['pid']} ({r['signal']})" if r["signal"]
                                                  else f"was not running (pid {r['pid']})"))


@task(iterable=["adw_id"], help={"adw_id": ID + "; repeatable (default: every agent with services)",
                                 "repo": REPO, "json": JSON})
@guard
def ps(c, adw_id=None, repo=None, json=False):
    """Show agents' services: pid, port, health (up, down, running, exited), uptime, log."""
    from ..ops import services

    settings = load_settings(c, repo)
    ids = list(dict.fromkeys(adw_id or [])) or services.agents_with_services(settings)
    emit(services.ps(settings, ids), json, services.print_ps)


@task(
    iterable=["service"],
    help={"adw_id": ID, "service": SERVICE, "follow": "keep printing what the logs get, until Ctrl-C",
          "lines": "how many of the last lines to print first (default 50)", "repo": REPO},
)
@guard
def logs(c, adw_id=None, service=None, follow=False, lines=50, repo=None):
    """Print an agent's service logs (agents/<id>/logs/<service>.log); -f follows them."""
    from ..core.errors import bad_input
    from ..ops import services

    if int(lines) < 0:
        raise bad_input(f"--lines={lines} must be 0 or more")
    try:
        services.logs(load_settings(c, repo), one(adw_id), _names(c, service), follow=follow, lines=int(lines))
    except KeyboardInterrupt:
        raise Exit(code=130) from None
