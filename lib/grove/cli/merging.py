"""Bringing work back: the merge queue, sync with the base, and the conflict forecast."""

from __future__ import annotations

from invoke import Exit, task

from .common import ID, JSON, QUIET, REPO, emit, guard, load_settings, one, reporter


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
@guard
def merge(c, adw_id=None, epic=None, all=False, strategy=None, validate=None, push=False, cleanup=False,
          dry_run=False, batch=False, sequential=False, base=None, repo=None, json=False, quiet=False):
    """Merge finished agents' branches into the base: validated, never half-applied.

    Merges happen in a Grove-owned integration worktree, prepared like an agent's for --validate;
    the base moves by compare-and-swap only after every merge (and the push) succeeded. A conflict
    or failed validation marks that agent and the queue goes on. --batch validates the whole queue
    once and bisects on failure. Exit 0 only if every requested branch merged and nothing needs attention.
    """
    from ..ops import merge as merging
    from ..core.errors import bad_input

    if batch and sequential:
        raise bad_input("--batch and --sequential exclude each other")
    settings = load_settings(c, repo, base_branch=base, merge_strategy=strategy,
                         merge_mode="batch" if batch else "sequential" if sequential else None)
    queue, skipped = merging.select(settings, list(adw_id or []), epic, all)
    plan = merging.Plan(base=settings.base_branch, strategy=settings.merge_strategy,
                        validate=settings.merge_validate if validate is None else validate,
                        push=push, dry_run=dry_run, queue=queue, skipped=skipped,
                        batch=settings.merge_mode == "batch")
    summary = merging.run(settings, plan, cleanup=cleanup, report=reporter(quiet))
    if settings.pool_refresh == "auto" and summary.get("base_after") not in (None, summary.get("base_before")):
        from ..ops import pool as pooling

        # The base just moved: the pool's entries follow it in the background (issue 24).
        pooling.refill_in_background(settings, dict(c.config.get("grove") or {}), summary["base_after"])
    emit(summary, json, merging.print_summary)
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
@guard
def sync(c, adw_id=None, strategy="merge", fetch=True, repo=None, json=False, quiet=False):
    """Bring the base's new commits into an agent's branch, inside its worktree.

    Refuses uncommitted changes (nothing uncommitted is ever touched). Grove's hidden files are put
    back as committed for the merge and re-applied after. A conflict is left in git's normal
    conflicted state with the agent's status `conflict` (exit 1): resolve, commit, run sync again,
    then `inv status --set completed` makes it mergeable.
    """
    from ..ops import sync as syncing

    result = syncing.sync(load_settings(c, repo), one(adw_id), strategy=strategy, fetch=fetch,
                          report=reporter(quiet))
    emit(result, json, lambda d: print(f"{d['adw_id']}: {d['outcome']} ({d['incoming_commits']} new commit(s) "
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
@guard
def conflicts(c, epic=None, base=None, repo=None, json=False):
    """Forecast which pairs of completed branches conflict, and in which files, with no checkout.

    Uses git merge-tree per pair; pairs touching disjoint files are skipped and answers are cached
    per pair of tips. Exits 0 whatever it finds (the forecast is the answer).
    """
    from ..ops import conflicts as forecasting

    report = forecasting.forecast(load_settings(c, repo, base_branch=base), epic=epic)
    emit(report, json, forecasting.print_forecast)
