"""Grove's Invoke tasks: each parses flags, calls one lib function, and prints or --json's the result.

The lib is imported inside the task bodies so `inv --list` pays only for Invoke itself.
"""

from __future__ import annotations

import functools
import gc as _gc
import json as _json
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from .defaults import DEFAULTS, field_name

REPO = "target repository (default: ADW_REPO, else the git top level of the current directory)"
JSON = "print exactly one JSON document on stdout (progress stays on stderr)"
QUIET = "no progress lines on stderr; errors and warnings still show, and the result still goes to stdout"
ID = "agent id: 1-64 ASCII letters, digits, '-' or '_'"


def _guard(body):
    """Turn a GroveError into Invoke's Exit with its code; with --json, the error is the document."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        from .errors import GroveError

        try:
            return body(c, *args, **kwargs)
        except GroveError as exc:
            if kwargs.get("json"):
                print(_json.dumps({"error": exc.message, "hint": exc.hint or None, "exit_code": exc.code}))
            raise Exit(f"grove: {exc}", code=exc.code) from None
        finally:
            # Interpreter shutdown walks every object the imports made (Invoke's alone cost a bare
            # `inv` ~17 ms); frozen objects are skipped, so a setup exits ~25 ms sooner (issue 12).
            # Only the cyclic collector is affected: a later task in the same run still runs.
            _gc.freeze()

    return wrapper


def _settings(c, repo=None, **flags):
    from . import config

    grove = c.config.get("grove") or {}
    return config.load({"repo": repo, **flags}, invoke_config=dict(grove))


def _reporter(quiet=False):
    from .report import Reporter

    return Reporter(quiet=quiet)


def _emit(data, json: bool, human) -> None:
    if json:
        print(_rows_json(data) if isinstance(data, list) else _json.dumps(data, indent=2, default=str))
    else:
        human(data)


def _rows_json(rows: list) -> str:
    """A list as one row per line: json's C encoder does each row, where indent=2 would send the
    whole document through the pure-Python one (20 ms for 100 agents, issue 12)."""
    if not rows:
        return "[]"
    return "[\n" + ",\n".join(_json.dumps(r, default=str) for r in rows) + "\n]"


def _one(adw_id):
    """``--adw-id`` is repeatable on some tasks; those that act on one agent take the last."""
    if isinstance(adw_id, list):
        adw_id = adw_id[-1] if adw_id else None
    if not adw_id:
        from .errors import bad_input

        raise bad_input("--adw-id is required")
    return adw_id


# ---------------------------------------------------------------------------------------------
# The setup chain and its undo


@task(
    iterable=["adw_id"],
    help={
        "adw_id": ID + "; repeat it to set up several agents at once in one process",
        "epic": "group id (e.g. TASK-001); the branch becomes feature/<epic>/<task>-<id>",
        "task": "task name, recorded and used in the branch name (with --epic)",
        "count": "with --epic: set up this many agents with generated ids",
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
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@_guard
def setup(c, adw_id=None, epic=None, task=None, count=0, branch=None, base=None, agent_id=None, install=True,
          db=True, reset_db=False, fetch=True, keep=False, pool=True, refill=False, repo=None, json=False,
          quiet=False):
    """Create ready-to-run agent worktrees: branch, ports, env files, dependencies, database.

    Runs validate, fetch, ports, worktree, ports_env, env, repoint, install and db in order.
    Re-running finishes what is missing and changes nothing that is already right; a failure
    rolls back what the run created. Several --adw-id (or --epic with --count) run concurrently.
    """
    from . import chain, ids
    from .errors import bad_input

    settings = _settings(c, repo, base_branch=base)
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
    states, errors = chain.setup_many(settings, reqs, _reporter(quiet))
    if refill:
        from . import pool as pooling

        pooling.refill_in_background(settings, dict(c.config.get("grove") or {}))
    if len(reqs) == 1 and states:
        _emit(states[0], json, _print_ready)
    else:
        _emit({"agents": states, "errors": errors}, json, lambda d: [_print_ready(s) for s in d["agents"]])
    if errors:
        # Exit 2 promises that nothing changed: only when no agent was set up (each error says its own code).
        code = max(e["exit_code"] for e in errors)
        raise Exit(f"grove: {len(errors)} of {len(reqs)} setups failed", code=1 if states and code == 2 else code)


def _print_ready(s):
    ports = " ".join(f"{k}={v}" for k, v in s["ports"].items())
    print(f"ready {s['adw_id']}: {s['worktree_path']} on {s['branch']} ({ports})")


@task(
    iterable=["adw_id"],
    help={
        "adw_id": ID + "; repeatable",
        "all": "every completed, merged or failed agent (uncommitted work salvaged first); others are listed",
        "delete_branch": "also delete the branch Grove made; refused when unmerged unless --force",
        "force": "do not ask: allow an unfinished status, remove a dirty worktree after saving its work under "
                 "refs/grove-salvage/, delete an unmerged branch after saving its tip under refs/grove-backup/",
        "keep_db": "keep the agent's Postgres database (ADW_DB_URL); by default teardown drops it",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@_guard
def teardown(c, adw_id=None, all=False, delete_branch=False, force=False, keep_db=False, repo=None, json=False,
             quiet=False):
    """Remove agent worktrees, free their ports and archive their state; branches are kept.

    Nothing is lost: uncommitted work is saved under refs/grove-salvage/, a detached HEAD or
    deleted branch tip no other ref holds under refs/grove-backup/. Only paths proven to lie
    inside trees/ are deleted. The state moves to agents/.archive/<id>-<utc>.json, status cleaned.
    The agent's Postgres database is dropped (its sessions ended first) unless --keep-db.
    """
    from . import cleanup

    settings = _settings(c, repo)
    report = _reporter(quiet)
    if all:
        result = cleanup.teardown_all(settings, keep_db=keep_db, report=report)
        _emit(result, json, lambda d: [print(f"kept {k['adw_id']}: {k['reason']}") for k in d["kept"]])
        return
    targets = [_one([a]) for a in (adw_id or [None])]
    if len(targets) == 1:
        _emit(cleanup.teardown(settings, targets[0], delete_branch=delete_branch, force=force, keep_db=keep_db,
                               report=report), json, lambda d: None)
        return
    from .errors import GroveError

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
    _emit({"torn_down": done, "errors": errors}, json, lambda d: None)
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
                 "ports listening, running exec and its last log line, age (needs rich: grove[watch])",
        "repo": REPO,
        "json": JSON,
    },
)
@_guard
def list_(c, epic=None, status=None, archived=False, watch=False, repo=None, json=False):
    """List agents, most recent first: status, branch, ports, path.

    One `git worktree list --porcelain -z` for all of them; `git` shows whether git knows the path.
    """
    from . import queries

    settings = _settings(c, repo)
    if watch:
        from . import watch as watching
        from .errors import bad_input

        if json or archived:
            raise bad_input("--watch draws a live table; it cannot be combined with --json or --archived")
        watching.watch(settings, epic_id=epic, status=status)
        return
    rows = queries.list_agents(settings, epic_id=epic, status=status, archived=archived)
    _emit(rows, json, queries.print_table)


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
@_guard
def status(c, adw_id=None, set=None, agent_id=None, error=None, repo=None, json=False):
    """Show one agent's state, or change its status with --set (a validated transition)."""
    from . import state

    settings = _settings(c, repo)
    adw_id = _one(adw_id)
    if set:
        s = state.set_status(settings, adw_id, set, by=agent_id, error=error, agent_id=agent_id)
    else:
        s = state.require(settings, adw_id)
    _emit(s, json, lambda d: print(_json.dumps(d, indent=2)))


@task(help={"adw_id": ID, "repo": REPO})
@_guard
def path(c, adw_id=None, repo=None):
    """Print an agent's worktree path, for cd "$(inv path --adw-id X)"."""
    from . import state

    print(state.require(_settings(c, repo), _one(adw_id))["worktree_path"])


@task(help={"adw_id": ID, "repo": REPO})
@_guard
def run(c, adw_id=None, repo=None):
    """Run a command in an agent's worktree with its ports and env exported: inv run --adw-id X -- CMD ARGS.

    The worktree's .ports.env and merged .env are exported to the command, so servers come up on
    the agent's own ports. Exits with the command's own exit code.
    """
    from . import agentrun
    from .errors import bad_input

    argv = _command_after_dashes(c)
    if not argv:
        raise bad_input("no command given", "inv run --adw-id X -- CMD ARGS...")
    agentrun.exec_in(_settings(c, repo), _one(adw_id), argv)


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
        "jobs": "run at most this many at once (default: all)",
        "timeout": "seconds each run may take; then its whole process tree is stopped and it counts as failed",
        "repo": REPO,
        "json": JSON,
        "quiet": "no live progress on stderr (errors and warnings still show)",
    },
)
@_guard
def exec_(c, adw_id=None, epic=None, all=False, jobs=0, timeout=0.0, repo=None, json=False, quiet=False):
    """Run a command in many agents' worktrees at once: inv exec --all [--jobs N] -- CMD ARGS.

    Each run gets the agent's ports, env files, ADW_ID, ADW_WORKTREE and ADW_BRANCH (as inv run),
    no shell, and its output in agents/<id>/logs/<utc>.log. Status: in_progress while it runs, then
    completed (exit 0) or failed (exit code and log tail in error_message). Ctrl-C and --timeout stop
    each whole process tree. Exit 0 only if every run succeeded; 130 when interrupted.
    """
    from . import execute

    settings = _settings(c, repo)
    ids, notes = execute.select(settings, list(adw_id or []), epic, all)
    argv = _command_after_dashes(c)
    display = execute.Display.choose(quiet)
    for note in notes:
        display.say(note)
    outcome = execute.execute(settings, ids, argv, jobs=int(jobs) or None, timeout=float(timeout) or None,
                              display=display)
    _emit(outcome.to_dict(), json, execute.print_outcome)
    if outcome.interrupted:
        raise Exit(code=130)
    if not outcome.ok:
        raise Exit(code=1)


@task(
    iterable=["adw_id"],
    help={
        "adw_id": ID + "; repeatable, merged in the order given",
        "epic": "every completed agent of this epic, oldest first",
        "all": "every completed agent, oldest first",
        "strategy": "no-ff (default, ADW_MERGE_STRATEGY), squash, or rebase",
        "validate": "shell command run on each merged result before the base moves (ADW_MERGE_VALIDATE)",
        "push": "push the new base; a rejected push is redone on the remote's new tip (ADW_PUSH_RETRIES)",
        "cleanup": "tear down merged agents afterwards, deleting their branches",
        "dry_run": "predict every outcome in order with git merge-tree; change nothing",
        "batch": "merge the whole queue, validate once, bisect on failure (ADW_MERGE_MODE=batch)",
        "sequential": "validate after each merge (the default; overrides ADW_MERGE_MODE=batch)",
        "base": "base branch to merge into (default ADW_BASE_BRANCH)",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@_guard
def merge(c, adw_id=None, epic=None, all=False, strategy=None, validate=None, push=False, cleanup=False,
          dry_run=False, batch=False, sequential=False, base=None, repo=None, json=False, quiet=False):
    """Merge finished agents' branches into the base: validated, never half-applied.

    Merges happen in a Grove-owned integration worktree, prepared like an agent's for --validate;
    the base moves by compare-and-swap only after every merge (and the push) succeeded. A conflict
    or failed validation marks that agent and the queue goes on. --batch validates the whole queue
    once and bisects on failure. Exit 0 only if every requested branch merged and nothing needs attention.
    """
    from . import merge as merging
    from .errors import bad_input

    if batch and sequential:
        raise bad_input("--batch and --sequential exclude each other")
    settings = _settings(c, repo, base_branch=base, merge_strategy=strategy,
                         merge_mode="batch" if batch else "sequential" if sequential else None)
    queue, skipped = merging.select(settings, list(adw_id or []), epic, all)
    plan = merging.Plan(base=settings.base_branch, strategy=settings.merge_strategy,
                        validate=settings.merge_validate if validate is None else validate,
                        push=push, dry_run=dry_run, queue=queue, skipped=skipped,
                        batch=settings.merge_mode == "batch")
    summary = merging.run(settings, plan, cleanup=cleanup, report=_reporter(quiet))
    _emit(summary, json, merging.print_summary)
    if merging.failed(summary):
        raise Exit(code=1)


@task(
    help={
        "adw_id": ID,
        "strategy": "merge (default: a merge commit on the agent's branch) or rebase (replay its commits)",
        "fetch": "fetch the base from the remote first; --no-fetch uses what is known locally",
        "repo": REPO,
        "json": JSON,
        "quiet": QUIET,
    },
)
@_guard
def sync(c, adw_id=None, strategy="merge", fetch=True, repo=None, json=False, quiet=False):
    """Bring the base's new commits into an agent's branch, inside its worktree.

    Refuses uncommitted changes (nothing uncommitted is ever touched). Grove's hidden files are put
    back as committed for the merge and re-applied after. A conflict is left in git's normal
    conflicted state with the agent's status `conflict` (exit 1): resolve, commit, run sync again,
    then `inv status --set completed` makes it mergeable.
    """
    from . import sync as syncing

    result = syncing.sync(_settings(c, repo), _one(adw_id), strategy=strategy, fetch=fetch,
                          report=_reporter(quiet))
    _emit(result, json, lambda d: print(f"{d['adw_id']}: {d['outcome']} ({d['incoming_commits']} new commit(s) "
                                        f"from {d['from']})" + (f"; conflict in {', '.join(d['conflict_files'])}"
                                                                if d["conflict_files"] else "")))
    if result["outcome"] == "conflict":
        raise Exit(code=1)


@task(
    help={
        "epic": "only this epic's completed agents",
        "base": "base branch (default ADW_BASE_BRANCH)",
        "repo": REPO,
        "json": JSON,
    },
)
@_guard
def conflicts(c, epic=None, base=None, repo=None, json=False):
    """Forecast which pairs of completed branches conflict, and in which files, with no checkout.

    Uses git merge-tree per pair; pairs touching disjoint files are skipped and answers are cached
    per pair of tips. Exits 0 whatever it finds (the forecast is the answer).
    """
    from . import conflicts as forecasting

    report = forecasting.forecast(_settings(c, repo, base_branch=base), epic=epic)
    _emit(report, json, forecasting.print_forecast)


@task(help={"repo": REPO, "json": JSON})
@_guard
def git_worktrees(c, repo=None, json=False):
    """Show what git itself knows about worktrees (path, branch, HEAD, locked, prunable), bypassing state."""
    from . import git

    rows = git.worktrees(_settings(c, repo).repo)
    _emit(rows, json, lambda d: [print(f"{w['path']}  {w['branch'] or '(detached)'}  {(w['head'] or '')[:10]}"
                                       + ("  locked" if w["locked"] else "") + ("  prunable" if w["prunable"] else ""))
                                 for w in d])


@task(help={"epic": "the epic whose finished agents to clean", "delete_branches": "also delete merged branches "
            "(unmerged ones are kept and listed)", "repo": REPO, "json": JSON, "quiet": QUIET})
@_guard
def cleanup_epic(c, epic=None, delete_branches=False, repo=None, json=False, quiet=False):
    """Tear down every finished agent of an epic and report how many were cleaned."""
    from . import cleanup
    from .errors import bad_input

    if not epic:
        raise bad_input("--epic is required")
    result = cleanup.cleanup_epic(_settings(c, repo), epic, delete_branches=delete_branches, report=_reporter(quiet))
    _emit(result, json, lambda d: print(f"cleaned {d['count']} worktree(s) of {epic}"))


@task(help={"max_age_days": "idle days before an unfinished agent counts as abandoned (default 7)",
            "dry_run": "only report what would be removed", "repo": REPO, "json": JSON, "quiet": QUIET})
@_guard
def gc(c, max_age_days=7.0, dry_run=False, repo=None, json=False, quiet=False):
    """Remove abandoned agents (unfinished and idle); their branches and commits stay reachable."""
    from . import cleanup

    result = cleanup.gc(_settings(c, repo), float(max_age_days), dry_run=dry_run, report=_reporter(quiet))
    verb = "would remove" if dry_run else "removed"
    _emit(result, json, lambda d: print(f"{verb} {len(d['abandoned'] if dry_run else d['removed'])} abandoned "
                                        f"agent(s): {', '.join(a['adw_id'] for a in d['abandoned']) or '-'}"))


@task(help={"fix": "repair what is safe: prune stale entries, release dead claims, archive orphaned state, "
                   "drop Postgres databases Grove created for agents that are gone",
            "repo": REPO, "json": JSON})
@_guard
def doctor(c, fix=False, repo=None, json=False):
    """Check every agent three ways (state, directory, git) plus the port registry and orphan branches.

    Exits 0 when healthy (or everything found was repaired with --fix), 1 when problems remain.
    """
    from . import doctor as doc

    report = doc.check(_settings(c, repo), fix=fix)
    _emit(report, json, doc.print_report)
    if not report["healthy"]:
        raise Exit(code=1)


@task(help={"adw_id": "only this agent's salvages; with --restore, the worktree to restore into",
            "restore": "a refs/grove-salvage/... ref to put back into the agent's worktree as uncommitted work",
            "repo": REPO, "json": JSON})
@_guard
def salvage(c, adw_id=None, restore=None, repo=None, json=False):
    """List salvaged uncommitted work (refs/grove-salvage/), or --restore one into a worktree.

    Grove salvages a worktree's tracked edits and untracked (not ignored) files before it removes
    it; ignored files (.env and the like) are never put into git. These refs are never pushed.
    """
    from . import preserve, state

    settings = _settings(c, repo)
    if restore:
        s = state.require(settings, _one(adw_id))
        result = preserve.restore(settings.repo, restore, Path(s["worktree_path"]))
        _emit(result, json, lambda d: print(f"restored {d['ref']} into {d['worktree']}: {len(d['files'])} file(s)"))
        return
    if adw_id:
        from .ids import check_id

        check_id(_one(adw_id))
    rows = preserve.salvages(settings.repo, _one(adw_id) if adw_id else None)
    _emit(rows, json, lambda d: [print(f"{r['ref']}  {r['date']}  {len(r['files'])} file(s)") for r in d]
          or (not d and print("no salvaged work")))


@task(help={"size": "fill (or drain) the pool to this many ready worktrees; 0 drains it; omit to show it",
            "base": "base branch the pooled worktrees start from (default ADW_BASE_BRANCH)",
            "fetch": "fetch the base first; --no-fetch uses the local base", "repo": REPO, "json": JSON,
            "quiet": QUIET})
@_guard
def pool(c, size=None, base=None, fetch=True, repo=None, json=False, quiet=False):
    """Show the warm pool, or fill it with --size N ready worktrees (0 drains it) for setup to take.

    A pooled worktree is checked out at the base (detached) under trees/.pool/, with env files,
    dependencies and the database ready; `inv setup` turns one into the agent's own worktree.
    Exits 1 when the pool could not reach the size (a failed fill, or a drained entry kept because
    it holds changes).
    """
    from . import pool as pooling
    from .errors import bad_input

    settings = _settings(c, repo, base_branch=base)
    if size is None:
        _emit(pooling.show(settings), json, _print_pool)
        return
    try:
        size = int(size)
    except ValueError:
        raise bad_input(f"--size {size!r} is not a whole number") from None
    if not 0 <= size <= 100:
        raise bad_input(f"--size {size} is outside 0..100")
    result = pooling.fill(settings, size, base, _reporter(quiet), fetch=fetch)
    _emit(result, json, _print_pool)
    if result["failed"] or result["kept"]:
        raise Exit("grove: the pool did not reach its size: "
                   + "; ".join(f"{x['name']}: {x.get('error') or x.get('reason')}" for x in result["failed"] + result["kept"]),
                   code=1)


def _print_pool(d):
    for e in d["entries"]:
        print(f"{e['name']:<12} {e['status']:<9} {e['base']:<12} {(e['commit'] or '')[:10]:<11} {e['path']}")
    print(f"pool: {d.get('ready', sum(e['status'] == 'ready' for e in d['entries']))} ready, size {d['size']}")


@task(help={"repo": REPO})
@_guard
def init(c, repo=None):
    """Add Grove's .gitignore entries and a commented .env section to the target repo (idempotent)."""
    from . import agentrun

    for line in agentrun.init_repo(_settings(c, repo)):
        print(line)


# ---------------------------------------------------------------------------------------------
# Single steps, for CI jobs that run the chain one step at a time


def _step(c, adw_id, repo, name):
    """Run one chain step on an existing agent and record its outcome in the state."""
    from . import steps

    return steps.run_step(_settings(c, repo), _one(adw_id), name, _reporter())


@task(help={"base": "base branch (default ADW_BASE_BRANCH)", "repo": REPO, "json": JSON})
@_guard
def git_fetch(c, base=None, repo=None, json=False):
    """Fetch the base branch from the remote under the repo lock; print the commit it resolves to."""
    from . import worktree

    settings = _settings(c, repo)
    commit, where = worktree.resolve_base(settings, base or settings.base_branch, True, _reporter())
    _emit({"base": base or settings.base_branch, "commit": commit, "from": where}, json,
          lambda d: print(f"{d['from']} {d['commit']}"))


@task(help={"adw_id": ID, "branch": "branch name (default adw/<id>)", "base": "base branch", "fetch":
            "fetch first; --no-fetch uses the local base", "repo": REPO, "json": JSON})
@_guard
def worktree_add(c, adw_id=None, branch=None, base=None, fetch=True, repo=None, json=False):
    """Create the agent's worktree and state (claims its ports too): the git half of setup."""
    from . import chain

    req = chain.Request(_one(adw_id), branch=branch, base=base, fetch=fetch, files=False, install=False, db=False)
    s = chain.setup(_settings(c, repo, base_branch=base), req, _reporter())
    _emit(s, json, _print_ready)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def ports_claim(c, adw_id=None, repo=None, json=False):
    """Claim a port slot for an agent (its own if it has one) and record it in its state."""
    from . import steps

    result = steps.claim_ports(_settings(c, repo), _one(adw_id))
    _emit(result, json, lambda d: print(f"slot {d['slot']}: " + " ".join(f"{k}={v}" for k, v in d["ports"].items())))


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def ports_release(c, adw_id=None, repo=None, json=False):
    """Release an agent's port claim."""
    from . import ports

    freed = ports.release(_settings(c, repo), _one(adw_id))
    _emit({"adw_id": adw_id, "freed_slots": freed}, json, lambda d: print(f"freed slots: {d['freed_slots']}"))


@task(help={"repo": REPO, "json": JSON})
@_guard
def ports_show(c, repo=None, json=False):
    """Show the port registry: which agent holds which slot and ports."""
    from . import steps

    rows = steps.registry_rows(_settings(c, repo))
    _emit(rows, json, lambda d: [print(f"slot {r['slot']:>3}  {r['adw_id']:<20} "
                                       + " ".join(f"{k}={v}" for k, v in r["ports"].items())) for r in d])


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def env_ports(c, adw_id=None, repo=None, json=False):
    """Write the agent's .ports.env from its claimed ports."""
    _emit(_step(c, adw_id, repo, "ports_env"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def env_merge(c, adw_id=None, repo=None, json=False):
    """Merge the main checkout's env files into the worktree, with the agent's ports laid over them."""
    _emit(_step(c, adw_id, repo, "env"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def env_repoint(c, adw_id=None, repo=None, json=False):
    """Repoint paths in the JSON config files (.mcp.json ...) at the worktree."""
    _emit(_step(c, adw_id, repo, "repoint"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def env_stage(c, adw_id=None, repo=None, json=False):
    """Stage your own edits of repointed configs in committable form (worktree paths put back), then commit."""
    from . import sync as syncing

    result = syncing.stage_configs(_settings(c, repo), _one(adw_id))
    _emit(result, json, lambda d: print(f"staged: {', '.join(d['staged']) or 'nothing'}"
                                        + (" (now run git commit)" if d["staged"] else "")))


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def deps_install(c, adw_id=None, repo=None, json=False):
    """Install the worktree's dependencies: uv sync --all-extras, bun install (or npm ci)."""
    _emit(_step(c, adw_id, repo, "install"), json, lambda d: None)


@task(help={"adw_id": ID, "repo": REPO, "json": JSON})
@_guard
def db_reset(c, adw_id=None, repo=None, json=False):
    """Recreate the agent's Postgres database from the template (with ADW_DB_URL), then run ADW_DB_RESET."""
    _emit(_step(c, adw_id, repo, "db"), json, lambda d: None)


@task(help={"epic": "only this epic's archived agents", "repo": REPO, "json": JSON})
@_guard
def state_archived(c, epic=None, repo=None, json=False):
    """List archived (cleaned) agent states from agents/.archive/, most recent first."""
    from . import queries

    rows = queries.list_agents(_settings(c, repo), epic_id=epic, archived=True)
    _emit(rows, json, queries.print_table)


# Top-level tasks, then each namespace as a plain table of {task name: task}.
TOP = {"setup": setup, "teardown": teardown, "status": status, "path": path, "run": run, "exec": exec_, "merge": merge,
       "sync": sync, "conflicts": conflicts,
       "list": list_, "git-worktrees": git_worktrees, "cleanup-epic": cleanup_epic, "gc": gc, "doctor": doctor,
       "salvage": salvage, "init": init, "pool": pool}
NAMESPACES = {
    "git": {"fetch": git_fetch},
    "worktree": {"add": worktree_add},
    "ports": {"claim": ports_claim, "release": ports_release, "show": ports_show},
    "env": {"ports": env_ports, "merge": env_merge, "repoint": env_repoint, "stage": env_stage},
    "deps": {"install": deps_install},
    "db": {"reset": db_reset},
    "state": {"show": status, "archived": state_archived},  # state.show is `inv status` under its namespace
}


def build_namespace() -> Collection:
    root = Collection()
    for name, body in TOP.items():
        root.add_task(body, name=name)
    for space, table in NAMESPACES.items():
        sub = Collection(space)
        for name, body in table.items():
            sub.add_task(body, name=name)
        root.add_collection(sub)
    # Defaults live in defaults.py; these None keys only make invoke.yaml (grove.port_slots: 20) and
    # INVOKE_GROVE_PORT_SLOTS=20 visible to Grove: Invoke loads env vars only for keys it already has.
    root.configure({"grove": {field_name(key): None for key in DEFAULTS}})
    return root


ns = build_namespace()

# What the imports made lives until exit: the cyclic collector need not walk it again, neither in
# the collections a run triggers nor at interpreter shutdown (`inv --list` exits ~2 ms sooner).
_gc.freeze()
