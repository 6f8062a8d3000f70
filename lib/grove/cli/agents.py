"""An agent's life: setup, teardown, list, status, path, run, exec, and `init` for a new repository."""

from __future__ import annotations

import sys

from invoke import Exit, task

from .common import ID, JSON, QUIET, REPO, emit, guard, load_settings, one, reporter


@task(
    iterable=["adw_id"],
    help={
        "adw_id": ID + "; repeat it to set up several agents at once in one process",
        "epic": "group id (e.g. TASK-001); the branch becomes feature/<epic>/<task>-<id>",
        "task": "task name, recorded and used in the branch name (with --epic)",
        "count": "with --epic: set up this many agents with generated ids (1 to 1000)",
        "branch": "branch name (default adw/<id>, or feature/<epic>/<task>-<id>)",
        "base": "base branch (default ADW_BASE_BRANCH, main)",
        "agent_id": "who will work in it (recorded in the state)",
        "install": "install dependencies (uv, bun); --no-install skips",
        "db": "create the agent's Postgres database (ADW_DB_URL) and run the reset script on first setup; --no-db skips",
        "reset_db": "on a re-run, clone the database from the template again and rerun the reset script "
                    "(a re-run otherwise keeps it, with the agent's rows)",
        "fetch": "fetch the base from the remote first; --no-fetch uses the local base",
        "keep": "on failure leave everything in place, state marked failed, for debugging",
        "pool": "take a ready worktree from the warm pool when there is one (`inv pool`); --no-pool skips",
        "refill": "afterwards refill the pool to its size (`inv pool --size N`) in the background",
        "dry_run": "validate, then print what would be created (branch, worktree, ports, env files, installs) "
                   "and change nothing",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@guard
def setup(c, adw_id=None, epic=None, task=None, count=None, branch=None, base=None, agent_id=None, install=True,
          db=True, reset_db=False, fetch=True, keep=False, pool=True, refill=False, dry_run=False, repo=None,
          json=False, quiet=False):
    """Create ready-to-run agent worktrees: branch, ports, env files, dependencies, database.

    Runs validate, fetch, ports, worktree, ports_env, env, repoint, install and db in order.
    Re-running finishes what is missing and changes nothing that is already right; a failure
    rolls back what the run created. Several --adw-id (or --epic with --count) run concurrently.
    """
    from ..ops import chain
    from ..core import ids, numbers
    from ..core.errors import bad_input

    # A number flag is a string here (default None): Invoke's own int() would take -2 (issue 20, item 11).
    count = numbers.parse(count, "--count", numbers.COUNT) if count is not None else 0
    settings = load_settings(c, repo, base_branch=base)
    wanted = list(adw_id or [])
    if count:
        if not epic:
            raise bad_input("--count needs --epic", "e.g. inv setup --epic TASK-001 --task api --count 3")
        wanted += [ids.new_id() for _ in range(count)]
    if not wanted:
        if not epic:
            raise bad_input("give --adw-id ID (repeatable), or --epic E [--task T] [--count N]")
        wanted = [ids.new_id()]
    if branch and len(wanted) > 1:
        raise bad_input("--branch names one branch; it cannot be used with several agents")
    reqs = [chain.Request(a, branch=branch, base=base, epic_id=epic, task_name=task, agent_id=agent_id,
                          fetch=fetch, install=install, db=db, reset_db=reset_db, keep=keep, pool=pool)
            for a in wanted]
    if dry_run:  # issue 21: nothing called dry changes anything
        plans = [chain.preview(settings, r) for r in reqs]
        emit(plans[0] if len(plans) == 1 else {"agents": plans}, json, chain.print_previews)
        return
    states, errors = chain.setup_many(settings, reqs, reporter(quiet))
    if refill or settings.pool_refresh == "auto":
        from ..ops import pool as pooling

        # The base the agents started from is the newest known: entries made before it follow it
        # in the background (issue 24), so the next pooled setup needs no checkout and no reseed.
        newest = next((s.get("base_commit") for s in states if s.get("base_branch") == settings.base_branch), None)
        if refill or newest:
            pooling.refill_in_background(settings, dict(c.config.get("grove") or {}), newest)
    if len(reqs) == 1 and states:
        emit(states[0], json, print_ready)
    else:
        emit({"agents": states, "errors": errors}, json, lambda d: [print_ready(s) for s in d["agents"]])
    if errors:
        # Exit 2 promises that nothing changed: only when no agent was set up (each error says its own code).
        code = max(e["exit_code"] for e in errors)
        raise Exit(f"grove: {len(errors)} of {len(reqs)} setups failed", code=1 if states and code == 2 else code)


def print_ready(s):
    ports = " ".join(f"{k}={v}" for k, v in s["ports"].items())
    print(f"ready {s['adw_id']}: {s['worktree_path']} on {s['branch']} ({ports})")


@task(
    iterable=["adw_id"],
    help={
        "adw_id": ID + "; repeatable",
        "all": "every completed, merged or failed agent (uncommitted work salvaged first); others are listed",
        "delete_branch": "also delete the branch Grove made; refused when unmerged unless --force",
        "force": "do not ask: allow an unfinished status, remove a dirty worktree after saving its work under "
                 "refs/grove-salvage/, delete an unmerged branch after saving its tip under refs/grove-backup/, "
                 "archive ignored files past ADW_ARCHIVE_LIMIT_MB, archive every file of a worktree whose .git is gone",
        "keep_db": "keep the agent's Postgres database (ADW_DB_URL); by default teardown drops it",
        "dry_run": "print what would be removed, saved and kept, and change nothing (one or more --adw-id)",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@guard
def teardown(c, adw_id=None, all=False, delete_branch=False, force=False, keep_db=False, dry_run=False, repo=None,
             json=False, quiet=False):
    """Remove agent worktrees, free their ports and archive their state; branches are kept.

    Nothing is lost: uncommitted work is saved under refs/grove-salvage/, a detached HEAD or
    deleted branch tip no other ref holds under refs/grove-backup/, ignored files worth keeping
    (an edited .env, a local database) under agents/.archive/<id>/<utc>/files/. Only paths proven
    to lie inside trees/ are deleted. The state moves to agents/.archive/<id>-<utc>.json, status cleaned.
    The agent's Postgres database is dropped (its sessions ended first) unless --keep-db.
    """
    from ..ops import cleanup

    from ..core.errors import bad_input

    settings = load_settings(c, repo)
    report = reporter(quiet)
    if all and dry_run:
        raise bad_input("--dry-run previews named agents: pass --adw-id ID (repeatable), not --all")
    if all:
        result = cleanup.teardown_all(settings, keep_db=keep_db, report=report)
        emit(result, json, lambda d: [print(f"kept {k['adw_id']}: {k['reason']}") for k in d["kept"]])
        if result["errors"]:  # a teardown that failed is not a success (issue 20, item 13)
            raise Exit(f"grove: {len(result['errors'])} teardown(s) failed: "
                       + "; ".join(f"{e['adw_id']}: {e['error']}" for e in result["errors"]), code=1)
        return
    if not adw_id:  # issue 21: the other way to say which agents
        raise bad_input("say which agents to tear down: --adw-id ID (repeatable)",
                        "or `inv teardown --all` for every completed, merged or failed agent")
    targets = [one([a]) for a in adw_id]
    if dry_run:  # issue 21: nothing called dry changes anything
        plans = [cleanup.preview(settings, t, delete_branch=delete_branch, force=force, keep_db=keep_db)
                 for t in targets]
        emit(plans[0] if len(plans) == 1 else {"agents": plans}, json, cleanup.print_previews)
        return
    if len(targets) == 1:
        emit(cleanup.teardown(settings, targets[0], delete_branch=delete_branch, force=force, keep_db=keep_db,
                               report=report), json, lambda d: None)
        return
    from ..core.errors import GroveError

    for target in targets:  # every id is checked before any is torn down: exit 2 changes nothing
        cleanup.check_known(settings, target)
    done, errors = [], []
    for target in targets:
        try:
            done.append(cleanup.teardown(settings, target, delete_branch=delete_branch, force=force, keep_db=keep_db,
                                         report=report))
        except GroveError as exc:
            report.warn(f"{target}: {exc}")
            errors.append({"adw_id": target, "error": exc.message, "exit_code": exc.code})
    emit({"torn_down": done, "errors": errors}, json, lambda d: None)
    if errors:
        # Exit 2 promises that nothing changed: only when none was torn down.
        code = max(e["exit_code"] for e in errors)
        raise Exit(f"grove: {len(errors)} of {len(targets)} teardowns failed", code=1 if done and code == 2 else code)


@task(
    help={
        "epic": "only this epic's agents",
        "status": "only agents with this status",
        "archived": "list archived (cleaned) agents instead",
        "watch": "a live table, redrawn about once a second until Ctrl-C: status, commits ahead, dirty files, "
                 "ports listening, running exec and its last log line, age (needs rich: the grove-worktrees[watch] extra)",
        "repo": REPO,
        "json": JSON,
    },
)
@guard
def list_(c, epic=None, status=None, archived=False, watch=False, repo=None, json=False):
    """List agents, most recent first: status, branch, ports, path.

    One `git worktree list --porcelain -z` for all of them; `git` shows whether git knows the path.
    """
    from ..ops import queries

    settings = load_settings(c, repo)
    if watch:
        from ..ops import watch as watching
        from ..core.errors import bad_input

        if json or archived:
            raise bad_input("--watch draws a live table; it cannot be combined with --json or --archived")
        watching.watch(settings, epic_id=epic, status=status)
        return
    rows = queries.list_agents(settings, epic_id=epic, status=status, archived=archived)
    emit(rows, json, queries.print_table)


@task(
    help={
        "adw_id": ID,
        "set": "new status: created, assigned, in_progress, completed, failed, merged, cleaned, conflict",
        "agent_id": "who made the change (recorded as agent_id)",
        "error": "error message to record (with --set failed or conflict)",
        "repo": REPO,
        "json": JSON,
    },
)
@guard
def status(c, adw_id=None, set=None, agent_id=None, error=None, repo=None, json=False):
    """Show one agent's state, or change its status with --set (a validated transition)."""
    from ..core import state

    settings = load_settings(c, repo)
    adw_id = one(adw_id)
    if set:
        s = state.set_status(settings, adw_id, set, by=agent_id, error=error, facts=True, agent_id=agent_id)
    else:
        s = state.require(settings, adw_id)
    emit(s, json, print_status)


def print_status(s: dict) -> None:
    """A screenful for people (issue 21: it was 80 lines of JSON); --json has every field."""
    ports = " ".join(f"{k}={v}" for k, v in (s.get("ports") or {}).items())
    steps = " ".join(f"{name}{'' if info.get('outcome') in ('done', 'kept', 'reused', 'unchanged') else ':' + str(info.get('outcome'))}"
                     for name, info in (s.get("steps") or {}).items())
    rows = [("branch", f"{s.get('branch')} (base {s.get('base_branch')})"), ("worktree", s.get("worktree_path")),
            ("ports", ports), ("epic", " / ".join(x for x in (s.get("epic_id"), s.get("task_name")) if x)),
            ("agent", s.get("agent_id")), ("commits", len(s.get("commits") or []) or None), ("steps", steps),
            ("error", s.get("error_message")), ("updated", s.get("updated_at"))]
    print(f"{s['adw_id']}: {s['status']}")
    for label, value in rows:
        if value:
            print(f"  {label:<9}{value}")


@task(help={"adw_id": ID, "repo": REPO})
@guard
def path(c, adw_id=None, repo=None):
    """Print an agent's worktree path, for cd "$(inv path --adw-id X)"."""
    from ..core import state

    print(state.require(load_settings(c, repo), one(adw_id))["worktree_path"])


@task(help={"adw_id": ID, "repo": REPO})
@guard
def run(c, adw_id=None, repo=None):
    """Run a command in an agent's worktree with its ports and env exported: inv run --adw-id X -- CMD ARGS.

    The worktree's .ports.env and merged .env are exported to the command, so servers come up on
    the agent's own ports. Exits with the command's own exit code.
    """
    from ..ops import agentrun
    from ..core.errors import bad_input

    argv = _command_after_dashes(c)
    if not argv:
        raise bad_input("no command given", "inv run --adw-id X -- CMD ARGS...")
    agentrun.exec_in(load_settings(c, repo), one(adw_id), argv)


def _command_after_dashes(c) -> list[str]:
    """The user's command: everything after ``--``, as given (no shell)."""
    import shlex

    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else shlex.split(c.remainder or "")


@task(
    iterable=["adw_id"],
    help={
        "adw_id": ID + "; repeatable",
        "epic": "every agent of this epic that can run (not merged or cleaned)",
        "all": "every agent that can run (not merged or cleaned)",
        "jobs": "run at most this many at once, 1 to 1000 (default: all)",
        "timeout": "seconds each run may take (more than 0); then its whole process tree is stopped and it "
                   "counts as failed",
        "repo": REPO,
        "json": JSON,
        "quiet": "no live progress on stderr (errors and warnings still show)",
    },
)
@guard
def exec_(c, adw_id=None, epic=None, all=False, jobs=None, timeout=None, repo=None, json=False, quiet=False):
    """Run a command in many agents' worktrees at once: inv exec --all [--jobs N] -- CMD ARGS.

    Each run gets the agent's ports, env files, ADW_ID, ADW_WORKTREE and ADW_BRANCH (as inv run),
    no shell, and its output in agents/<id>/logs/<utc>.log. Status: in_progress while it runs, then
    completed (exit 0) or failed (exit code and log tail in error_message). Ctrl-C and --timeout stop
    each whole process tree. Exit 0 only if every run succeeded; 130 when interrupted.
    """
    from ..ops import execute
    from ..core import numbers

    jobs = numbers.parse(jobs, "--jobs", numbers.COUNT) if jobs is not None else None
    timeout = numbers.parse(timeout, "--timeout", numbers.SECONDS) if timeout is not None else None
    settings = load_settings(c, repo)
    ids, notes = execute.select(settings, list(adw_id or []), epic, all)
    argv = _command_after_dashes(c)
    display = execute.Display.choose(quiet)
    for note in notes:
        display.say(note)
    outcome = execute.execute(settings, ids, argv, jobs=int(jobs) if jobs else None, timeout=timeout,
                              display=display)
    emit(outcome.to_dict(), json, execute.print_outcome)
    if outcome.interrupted:
        raise Exit(code=130)
    if not outcome.ok:
        raise Exit(code=1)


@task(help={"repo": REPO, "tasks": "also write a two-line tasks.py so `\0inv setup --adw-id X` runs Grove here",
            "save": "write the detected projects down as ADW_INSTALL_DIRS in .env (only a git-ignored .env)",
            "claude_code": "also merge Grove's WorktreeCreate/WorktreeRemove hooks into .claude/settings.json, "
                           "so `claude --worktree NAME` sessions get Grove agents (docs/agents.md)",
            "git_hook": "also install a post-checkout hook that adopts each worktree `git worktree add` makes "
                        "(`grove adopt`); other checkouts return at once",
            "json": JSON})
@guard
def init(c, repo=None, tasks=False, save=False, claude_code=False, git_hook=False, json=False):
    """Ready a repository for Grove (ignore rules in .git/info/exclude) and show what setup will install."""
    from ..ops import adopt, agentrun, claude

    settings = load_settings(c, repo)
    if claude_code:  # exit 2 changes nothing: what cannot be merged into is refused first
        claude.check_init(settings)
    if git_hook:
        adopt.check_git_hook(settings)
    report = agentrun.init_repo(settings, tasks=tasks, save=save)
    if claude_code:
        report["did"] += claude.init(settings)
    if git_hook:
        report["did"] += adopt.install_git_hook(settings, agentrun.grove_command(portable=False))
    emit(report, json, agentrun.print_init)
