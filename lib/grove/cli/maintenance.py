"""Keeping a repository healthy: gc, cleanup-epic, doctor, salvage, the warm pool, git's worktree list."""

from __future__ import annotations

from pathlib import Path

from invoke import Exit, task

from .common import JSON, QUIET, REPO, emit, guard, load_settings, one, reporter


@task(help={"repo": REPO, "json": JSON})
@guard
def git_worktrees(c, repo=None, json=False):
    """Show what git itself knows about worktrees (path, branch, HEAD, locked, prunable), bypassing state."""
    from ..core import git

    rows = git.worktrees(load_settings(c, repo).repo)
    emit(rows, json, lambda d: [print(f"{w['path']}  {w['branch'] or '(detached)'}  {(w['head'] or '')[:10]}"
                                       + ("  locked" if w["locked"] else "") + ("  prunable" if w["prunable"] else ""))
                                 for w in d])


@task(help={"epic": "the epic whose finished agents to clean", "delete_branches": "also delete merged branches "
            "(unmerged ones are kept and listed)", "repo": REPO, "json": JSON, "quiet": QUIET})
@guard
def cleanup_epic(c, epic=None, delete_branches=False, repo=None, json=False, quiet=False):
    """Tear down every finished agent of an epic and report how many were cleaned."""
    from ..ops import cleanup
    from ..core.errors import bad_input

    if not epic:
        raise bad_input("--epic is required")
    result = cleanup.cleanup_epic(load_settings(c, repo), epic, delete_branches=delete_branches, report=reporter(quiet))
    emit(result, json, lambda d: print(f"cleaned {d['count']} worktree(s) of {epic}"))
    if result["errors"]:  # a teardown that failed is not a success (issue 20, item 13)
        raise Exit(f"grove: {len(result['errors'])} teardown(s) failed: "
                   + "; ".join(f"{e['adw_id']}: {e['error']}" for e in result["errors"]), code=1)


@task(help={"max_age_days": "idle days before an unfinished agent counts as abandoned (default 7; 0 to 36500, 0: all, "
                            "however recent)",
            "dry_run": "only report what would be removed",
            "archives": "instead: delete the archives of ignored files (agents/.archive/<id>/<utc>/) older than "
                        "--older-than-days; only directories holding Grove's manifest are touched",
            "older_than_days": "with --archives: a finite number of days, 0 or more (required)",
            "repo": REPO, "json": JSON, "quiet": QUIET})
@guard
def gc(c, max_age_days=None, dry_run=False, archives=False, older_than_days=None, repo=None, json=False, quiet=False):
    """Remove abandoned agents (unfinished and idle); their branches, commits and databases stay."""
    from ..ops import cleanup

    if archives or older_than_days is not None:
        _gc_archives(c, archives, older_than_days, dry_run, repo, json)
        return
    # A string (default None), checked by gc itself: Invoke's float() takes -1 and nan (issue 20, item 11).
    result = cleanup.gc(load_settings(c, repo), 7.0 if max_age_days is None else max_age_days, dry_run=dry_run,
                        report=reporter(quiet))
    verb = "would remove" if dry_run else "removed"
    emit(result, json, lambda d: print(f"{verb} {len(d['abandoned'] if dry_run else d['removed'])} abandoned "
                                        f"agent(s): {', '.join(a['adw_id'] for a in d['abandoned']) or '-'}"))


def _gc_archives(c, archives, older_than_days, dry_run, repo, json):
    """Deleting archived ignored files is a deliberate act, never a side effect (issue 20)."""
    from ..core.errors import bad_input
    from ..safety import archive

    if not archives or older_than_days is None:
        raise bad_input("deleting archives takes both --archives and --older-than-days N",
                        "e.g. grove gc --archives --older-than-days 30")
    days = archive.check_days(older_than_days)
    result = archive.prune(load_settings(c, repo), days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    emit(result, json, lambda d: print(f"{verb} {len(d['archives_deleted'])} archive(s) older than {days:g} day(s)"
                                        + "".join(f"\n  {a['path']}" for a in d["archives_deleted"])))


@task(help={"fix": "repair what is safe: prune stale entries, release dead claims, archive orphaned state, "
                   "drop Postgres databases Grove created for agents that are gone",
            "dry_run": "with --fix: list what --fix would repair, and change nothing",
            "repo": REPO, "json": JSON})
@guard
def doctor(c, fix=False, dry_run=False, repo=None, json=False):
    """Check every agent three ways (state, directory, git) plus the port registry and orphan branches.

    Exits 0 when healthy (or everything found was repaired with --fix), 1 when problems remain.
    """
    from ..ops import doctor as doc

    # --fix --dry-run: the plain check, whose every problem says what --fix would do (issue 21).
    report = doc.check(load_settings(c, repo), fix=fix and not dry_run)
    if dry_run:
        report["dry_run"] = True
    emit(report, json, doc.print_report)
    if not report["healthy"]:
        raise Exit(code=1)


@task(help={"adw_id": "only this agent's salvages, archives and dumps; with --restore, the worktree to restore into",
            "restore": "a refs/grove-salvage/... ref, or an archive (its id <adw_id>/<utc> or its path), to put back "
                       "into the agent's worktree; or the path of a database dump "
                       "(agents/.archive/<id>/<utc>/db/<name>.dump) to load back into the agent's database",
            "repo": REPO, "json": JSON})
@guard
def salvage(c, adw_id=None, restore=None, repo=None, json=False):
    """List salvaged work (refs/grove-salvage/), archived ignored files and database dumps, or --restore one.

    Grove salvages a worktree's tracked edits and untracked (not ignored) files before it removes
    it; ignored files (.env and the like) are never put into git: the ones worth keeping are moved
    to agents/.archive/<id>/<utc>/files/ instead, and a database is dumped into
    agents/.archive/<id>/<utc>/db/ before anything drops it (issue 20). These refs are never pushed.
    """
    from ..safety import archive, dbdump, preserve
    from ..core import state

    settings = load_settings(c, repo)
    if restore and not restore.startswith("refs/") and dbdump.is_dump(settings, restore):
        from ..resources import agentdb

        result = agentdb.restore(settings, restore, one(adw_id) if adw_id else None)
        emit(result, json, lambda d: print(f"restored {d['dump']} into database {d['database']} "
                                            f"(what it held before: {d['saved_before']})"))
        return
    if restore:
        s = state.require(settings, one(adw_id))
        wt = Path(s["worktree_path"])
        # An archive id is <adw_id>/<utc>, and "refs" is a valid adw_id: an archive found wins.
        if restore.startswith(preserve.SALVAGE) or (restore.startswith("refs/") and not archive.exists(settings, restore)):
            result = _restore_salvage(settings, s, restore, wt)
        else:
            result = archive.restore(settings, restore, wt)
        from ..core import events

        events.emit(settings, "restored", s["adw_id"], ref=restore, files=len(result.get("files") or []))
        emit(result, json, lambda d: print(f"restored {d.get('ref') or d.get('id')} into {d['worktree']}: "
                                           f"{len(d['files'])} file(s)"))
        return
    if adw_id:
        from ..core.ids import check_id

        check_id(one(adw_id))
    rows = [dict(r, kind="salvage") for r in preserve.salvages(settings.repo, one(adw_id) if adw_id else None)]
    rows += archive.listing(settings, one(adw_id) if adw_id else None)
    rows += dbdump.listing(settings, one(adw_id) if adw_id else None)
    emit(rows, json, lambda d: [print(f"{r['path']}  {r['date']}  database {r['name']} ({r['size']} bytes)"
                                      if r.get("kind") == dbdump.KIND else
                                      f"{r.get('ref') or r['path']}  {r['date']}  {len(r['files'])} file(s)")
                                for r in d] or (not d and print("no salvaged work")))


def _restore_salvage(settings, s, ref, wt):
    """A salvage ref back into the worktree; Grove's hidden files there are handled by preserve (issue 20, item 10)."""
    from ..resources import hidden
    from ..safety import preserve

    shown = hidden.hidden_files(wt) if wt.is_dir() and not preserve.checkout_problem(wt) else []
    edited = hidden.edited_hidden(settings, s, wt) if shown else []
    return preserve.restore(settings.repo, ref, wt, hidden=shown, edited_hidden=edited)


@task(help={"size": "fill (or drain) the pool to this many ready worktrees; 0 drains it; omit to show it",
            "base": "base branch the pooled worktrees start from (default ADW_BASE_BRANCH)",
            "fetch": "fetch the base first; --no-fetch uses the local base",
            "follow": "keep going: fetch, top up and refresh to the newest base every --interval seconds, until "
                      "Ctrl-C / SIGTERM (or --rounds); --size defaults to the pool's recorded size",
            "interval": "seconds between rounds with --follow (default 60)",
            "rounds": "with --follow: stop after this many rounds (default 0: until stopped)",
            "dry_run": "with --size: say how many entries would be made and which drained; change nothing",
            "repo": REPO, "json": JSON, "quiet": QUIET})
@guard
def pool(c, size=None, base=None, fetch=True, follow=False, interval=None, rounds=None, dry_run=False, repo=None,
         json=False, quiet=False):
    """Show the warm pool, or fill it with --size N ready worktrees (0 drains it) for setup to take.

    A pooled worktree is checked out at the base (detached) under trees/.pool/, with env files,
    dependencies and the database ready; `inv setup` turns one into the agent's own worktree.
    Exits 1 when the pool could not reach the size (a failed fill, or a drained entry kept because
    it holds changes).
    """
    from ..ops import pool as pooling
    from ..core import numbers
    from ..core.errors import bad_input

    settings = load_settings(c, repo, base_branch=base)
    if size is None and follow:
        size = pooling.read(settings).get("size") or None
        if size is None:
            raise bad_input("--follow needs a size: give --size N (the pool has none recorded)")
    if size is None:
        emit(pooling.show(settings), json, _print_pool)
        return
    size = int(numbers.parse(size, "--size", numbers.Range(0, 100, integer=True)))
    if dry_run:  # issue 21: nothing called dry changes anything
        if follow:
            raise bad_input("--dry-run previews one fill: drop --follow")
        emit(pooling.fill(settings, size, base, reporter(quiet), fetch=fetch, dry_run=True), json,
             lambda d: print(f"would make {d['would_create']} pool entr(ies) on {d['base']} and drain "
                             f"{len(d['would_drain'])}{': ' + ', '.join(d['would_drain']) if d['would_drain'] else ''}; "
                             "nothing was changed (--dry-run)"))
        return
    if follow:
        interval = numbers.parse(60 if interval is None else interval, "--interval", numbers.Range(0.1, 86400, unit="s"))
        rounds = int(numbers.parse(0 if rounds is None else rounds, "--rounds", numbers.Range(0, 10**9, integer=True)))
        result = pooling.follow(settings, size, base, reporter(quiet), interval=interval, rounds=rounds, fetch=fetch)
    else:
        result = pooling.fill(settings, size, base, reporter(quiet), fetch=fetch)
    emit(result, json, _print_pool)
    if result.get("failed") or result.get("kept"):
        raise Exit("grove: the pool did not reach its size: "
                   + "; ".join(f"{x['name']}: {x.get('error') or x.get('reason')}" for x in result.get("failed", []) + result.get("kept", [])),
                   code=1)


def _print_pool(d):
    for e in d["entries"]:
        print(f"{e['name']:<12} {e['status']:<9} {e['base']:<12} {(e['commit'] or '')[:10]:<11} {e['path']}")
    print(f"pool: {d.get('ready', sum(e['status'] == 'ready' for e in d['entries']))} ready, size {d['size']}")
