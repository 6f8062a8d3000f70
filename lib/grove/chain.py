"""The setup chain: from nothing to a ready, isolated agent worktree, one small step at a time.

Order: validate, fetch, ports (claim), worktree, submodules, include, ports_env, env, repoint, install, db; the state
is written once the claim is held and again when the chain ends. Ports are claimed before any
git work so an agent that cannot get a slot fails fast and leaves nothing behind.

Idempotent: re-running finishes missing steps and keeps the same slot and branch.
Atomic in effect: on failure it undoes what this run created (unless ``keep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from . import agentdb, git, ids, locks, owned, pool, ports, state, steps, worktree
from .config import Settings
from .errors import GroveError, bad_input
from .report import Reporter

OP = "setup"
DONE = ("done", "kept")  # step outcomes that mean "this worktree has it"


@dataclass
class Request:
    adw_id: str
    branch: str | None = None
    base: str | None = None
    epic_id: str | None = None
    task_name: str | None = None
    agent_id: str | None = None
    fetch: bool = True
    files: bool = True  # .ports.env, env merge, repoint (worktree.add alone skips them)
    install: bool = True
    db: bool = True
    reset_db: bool = False  # reset the database even though an earlier run already did
    keep: bool = False
    pool: bool = True  # take a ready worktree from the warm pool when there is one (pool.py)


@dataclass
class _Undo:
    """What this run created, so a failure can remove exactly that."""

    claim: bool = False
    state: bool = False
    worktree: bool = False
    branch: str | None = None  # the branch name, when this run created it
    base_commit: str | None = None  # where that branch started
    databases: list = field(default_factory=list)  # Postgres databases this run created
    steps: dict = field(default_factory=dict)


def validate(settings: Settings, req: Request) -> tuple[str, str, dict | None, str | None]:
    """Check id, branch, base and config before anything changes: (branch, base, existing state,
    the branch's tip when it exists)."""
    ids.check_id(req.adw_id)
    ids.check_unique_case(settings, req.adw_id)
    current = state.load(settings, req.adw_id)
    branch = req.branch or (current or {}).get("branch") or ids.default_branch(req.adw_id, req.epic_id, req.task_name)
    base = req.base or (current or {}).get("base_branch") or settings.base_branch
    git.check_branch_name(settings.repo, branch)
    git.check_branch_name(settings.repo, base)
    agentdb.check(settings, req.adw_id, connect=req.db)
    if current and current["branch"] != branch:
        raise bad_input(f"agent {req.adw_id} already works on {current['branch']}, not {branch}",
                        "drop --branch, or tear the agent down first")
    # One for-each-ref answers every existence question of validation (issue 12).
    names = [f"refs/heads/{branch}"]
    if current is None:
        names += [f"refs/heads/{base}", f"refs/remotes/{settings.remote}/{base}"]
    known = git.refs(settings.repo, names)
    tip = known.get(f"refs/heads/{branch}")
    if current is None:
        worktree.check_base(settings, base, req.fetch, known)
    if current is None and tip:
        record = owned.owner(settings, "branch", branch)
        if record is None or record.get("adw_id") != req.adw_id:
            raise bad_input(f"branch {branch} already exists and belongs to no Grove agent of this id",
                            "pick another --branch, or delete that branch if it is yours")
        # Grove made it for this id (e.g. a teardown kept it): setup resumes on it (issue 10, defect 10).
    return branch, base, current, tip


def setup(settings: Settings, req: Request, report: Reporter) -> dict:
    """Run the whole chain for one agent; returns its final state."""
    with report.step("validate", OP) as info:
        branch, base, current, tip = validate(settings, req)
        for name in worktree.ignore_warnings(settings):
            report.warn(f"{name} is not git-ignored in {settings.repo}; run `inv init` to add it")
        info["detail"] = branch
    # One setup per id at a time; a second one is told so at once instead of racing the first.
    with locks.locked(settings.lock_path(f"op-{req.adw_id}"), 0, f"{req.adw_id} is already being set up or torn down"):
        undo = _Undo()
        try:
            return _chain(settings, req, report, branch, base, current, undo, tip)
        except BaseException as exc:
            _fail(settings, req, report, undo, exc)
            raise


def setup_many(settings: Settings, reqs: list[Request], report: Reporter) -> tuple[list[dict], list[dict]]:
    """Set up several agents concurrently in this one process (one Invoke start-up for all).

    Returns (states of those that succeeded, [{adw_id, error, exit_code}] for the rest).
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(req: Request):
        try:
            return setup(settings, req, report.for_agent(req.adw_id) if len(reqs) > 1 else report), None
        except GroveError as exc:
            if len(reqs) > 1:
                report.warn(f"{req.adw_id}: {exc}")
            return None, {"adw_id": req.adw_id, "error": exc.message, "exit_code": exc.code}

    if len({r.adw_id for r in reqs}) != len(reqs):
        raise bad_input("the same --adw-id is given twice")
    if len(reqs) == 1:
        return [setup(settings, reqs[0], report)], []
    # Git work is serialised by the repo lock anyway; the installs are what runs in parallel.
    with ThreadPoolExecutor(max_workers=min(len(reqs), 16)) as pool:
        results = list(pool.map(one, reqs))
    return [s for s, _ in results if s], [e for _, e in results if e]


def _chain(settings, req, report, branch, base, current, undo, tip=None) -> dict:
    path = settings.worktree_path(req.adw_id)
    done = undo.steps
    with report.step("fetch", OP, done) as info:
        if current and current.get("base_commit") and path.is_dir():
            base_commit, info["outcome"] = current["base_commit"], "reused"
        else:
            base_commit, info["detail"] = worktree.resolve_base(settings, base, req.fetch, report)
            info["outcome"] = "done" if req.fetch else "skipped"
            if tip:  # resuming on a kept branch: its commits are counted from where it left the base
                base_commit = git.git(settings.repo, "merge-base", base_commit, tip) or base_commit
    with report.step("ports", OP, done) as info:
        claim = ports.claim(settings, req.adw_id)
        undo.claim = not claim.reused
        info["outcome"] = "reused" if claim.reused else "done"
        info["detail"] = f"slot {claim.slot}: " + " ".join(f"{k}={v}" for k, v in claim.ports.items())
    undo.state = current is None
    fresh = state.new(settings, req.adw_id, branch, base, base_commit=base_commit, epic_id=req.epic_id,
                      task_name=req.task_name, agent_id=req.agent_id)
    state.update(settings, req.adw_id, lambda s: steps.record_claim(s, claim), create=fresh)
    with report.step("worktree", OP, done) as info:
        # A branch a teardown kept is checked out as it is, into a fresh worktree, not a pooled one.
        kept_branch = tip is not None and current is None
        taken = pool.take(settings, req.adw_id, branch, base, base_commit, current is not None, undo) \
            if req.pool and not kept_branch else None
        reused = False
        if taken:
            info["outcome"] = "pooled"
            report.say(f"  from the pool: {taken.detail}")
        elif worktree.existing(settings, req.adw_id, branch):
            reused = True
            info["outcome"] = "reused"
        else:
            undo.worktree = True
            undo.branch = branch if worktree.add(settings, req.adw_id, branch, base_commit,
                                                 new_branch=tip is None) else None
            undo.base_commit = base_commit
        info["detail"] = str(path)
    with report.step("submodules", OP, done) as info:
        info["outcome"], info["detail"] = steps.submodules_step(settings, path)
    values = steps.env_values(settings, req.adw_id, claim.ports)
    written: list[str] = []
    for name, step in steps.FILE_STEPS.items():
        with report.step(name, OP, done) as info:
            if not req.files:
                info["outcome"] = "skipped"
                continue
            info["outcome"], info["detail"], files = step(settings, path, values)
            written.extend(files)
    for name in worktree.hide(settings, path, written):
        report.warn(f"{name} is not git-ignored: an agent's `git add -A` would commit its copy (ports, secrets); "
                    f"add it to .gitignore")
    # Install and db are not repeated once done: a re-run must not wipe the rows an agent wrote
    # (issue 10, defect 6). `--reset-db` (or `inv db.reset`) resets on purpose.
    # Only in the same worktree: one made anew (its directory was lost) has no install and no sqlite db.
    before = {name: info.get("outcome") for name, info in (current or {}).get("steps", {}).items()} if reused else {}
    with report.step("install", OP, done, long=True) as info:
        if before.get("install") in DONE and req.install:
            info["outcome"], info["detail"] = "kept", "installed by an earlier run"
        else:
            info["outcome"], info["detail"] = steps.install(settings, path, req.install,
                                                            only=taken.install_only if taken else None)
    with report.step("db", OP, done, long=True) as info:
        if taken and not taken.db and req.db and not req.reset_db:
            info["outcome"], info["detail"] = "kept", f"the pool's database: {taken.db_reason}"
        else:
            kept = before.get("db") in DONE and not req.reset_db
            info["outcome"], info["detail"] = steps.reset_db(settings, path, values, req.db, kept=kept,
                                                             reset=req.reset_db, created=undo.databases)
    return state.update(settings, req.adw_id, lambda s: _finish(s, done, taken))


def _finish(s: dict, done: dict, taken=None) -> None:
    s["steps"].update(done)
    s["error_message"] = None
    s["from_pool"] = bool(taken) or s.get("from_pool", False)


def _fail(settings: Settings, req: Request, report: Reporter, undo: _Undo, exc: BaseException) -> None:
    """Undo what this run created, or with ``keep`` leave it and mark the state failed."""
    reason = getattr(exc, "message", None) or repr(exc)
    step = next((name for name, info in undo.steps.items() if info["outcome"] == "failed"), "setup")
    if req.keep or not undo.state:
        if settings.state_path(req.adw_id).exists():
            def mark(s: dict) -> None:
                s["steps"].update(undo.steps)
                if s["status"] != "failed":
                    state.apply_status(s, "failed", error=f"{step}: {reason}")
                else:
                    s["error_message"] = f"{step}: {reason}"
            _quietly(report, "mark the state failed", lambda: state.update(settings, req.adw_id, mark))
        if req.keep:
            report.warn(f"setup failed at {step}; everything is left in place (--keep)")
            return
    path = settings.worktree_path(req.adw_id)
    for name in undo.databases:
        _quietly(report, f"drop database {name}", lambda name=name: agentdb.drop_created(settings, req.adw_id, name))
    if undo.worktree:
        _quietly(report, "remove the worktree", lambda: worktree.remove(settings, path, salvage=True))
    if undo.branch:
        branch, base = undo.branch, undo.base_commit or "HEAD"
        _quietly(report, "delete the branch", lambda: worktree.delete_branch(settings, branch, base))
    if undo.state:
        _quietly(report, "remove the state", lambda: _remove_state(settings, req.adw_id))
    if undo.claim:
        _quietly(report, "release the port claim", lambda: ports.release(settings, req.adw_id))
    if isinstance(exc, GroveError):
        exc.message = f"setup of {req.adw_id} failed at {step}: {exc.message} (rolled back)"


def _remove_state(settings: Settings, adw_id: str) -> None:
    path = settings.state_path(adw_id)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass


def _quietly(report: Reporter, what: str, action) -> None:
    """A rollback step that fails must not hide the original error; say what is left behind."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - reported, and `inv doctor` finds what is left
        report.warn(f"rollback could not {what}: {exc}; `inv doctor` will show it")
