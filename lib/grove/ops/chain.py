"""The setup chain: from nothing to a ready, isolated agent worktree, one small step at a time.

Order: validate, fetch, ports (claim), worktree, submodules, include, ports_env, env, repoint, install, db; the state
is written once the claim is held and again when the chain ends. Ports are claimed before any
git work so an agent that cannot get a slot fails fast and leaves nothing behind.

Idempotent: re-running finishes missing steps and keeps the same slot and branch.
Atomic in effect: on failure it undoes what this run created (unless ``keep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ..resources import agentdb, deps, ports, table
from ..resources.shape import Agent
from ..core import events, git, ids, locks, state
from ..safety import owned
from . import pool, steps, worktree
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.report import Reporter

OP = "setup"


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
    ports.check(settings)  # a corrupt or newer lease registry: exit 2 before anything changes (issue 23)
    if req.install:
        _check_tools(settings)
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


def _check_tools(settings: Settings) -> None:
    """A tool the projects to install need and this machine lacks: exit 2 before anything is
    created, not a failed install after the worktree, the ports and the branch exist (issue 21)."""
    missing = deps.missing_tools(settings, settings.repo)
    if missing:
        raise bad_input(f"setup needs tools that are not installed: {'; '.join(missing)}",
                        "install them, or pass --no-install (ADW_INSTALL_DIRS chooses the directories)")


def preview(settings: Settings, req: Request) -> dict:
    """What setup would create for ``req``, changing nothing: no lock, claim, file, ref or install
    (`--dry-run`, issue 21). Validation runs in full, so bad input is exit 2 here as in a real run."""
    from ..resources import envfiles

    branch, base, current, tip = validate(settings, req)
    path = settings.worktree_path(req.adw_id)
    slot = (current or {}).get("slot")
    if slot is None:  # the preferred slot; a taken or busy one moves the real run to the next free slot
        slot = ports.preferred_slot(req.adw_id, settings.port_slots)
    env_files = [{"file": n, "source": str(src.relative_to(settings.repo))}
                 for n in settings.env_files for src in [envfiles.source_for(settings.repo / n)[0]] if src]
    installs = [{"dir": d, "tools": deps.plan(settings.repo / d)} for d in deps.install_dirs(settings, settings.repo)]
    return {
        "dry_run": True, "adw_id": req.adw_id, "exists": current is not None,
        "branch": branch, "branch_action": "resume" if tip else "create", "base_branch": base,
        "worktree_path": str(path), "worktree_action": "keep" if path.is_dir() else "create",
        "slot": slot, "ports": ports.ports_for(settings, slot),
        "env_files": env_files if req.files else [],
        "install": [i for i in installs if i["tools"]] if req.install else [],
        "db": req.db and (agentdb.configured(settings)
                          or bool(settings.db_reset and (settings.repo / settings.db_reset).is_file())),
    }


def print_previews(d: dict) -> None:
    for p in d.get("agents", [d]):
        print_preview(p)


def print_preview(p: dict) -> None:
    ports_text = " ".join(f"{k}={v}" for k, v in p["ports"].items())
    print(f"would set up {p['adw_id']}: {p['worktree_action']} {p['worktree_path']}, {p['branch_action']} branch "
          f"{p['branch']} from {p['base_branch']}, slot {p['slot']} ({ports_text})")
    if p["env_files"]:
        print("  env files: " + ", ".join(f"{e['file']} (from {e['source']})" for e in p["env_files"]))
    print("  install: " + (", ".join(f"{i['dir']} ({'+'.join(i['tools'])})" for i in p["install"]) or "nothing"))
    print(f"  database: {'reset' if p['db'] else 'nothing'}; nothing was changed (--dry-run)")


def setup(settings: Settings, req: Request, report: Reporter) -> dict:
    """Run the whole chain for one agent; returns its final state."""
    run = _validated(settings, req, report)
    _validation_passed(settings, report)
    # One setup per id at a time; a second one is told so at once instead of racing the first.
    with _op_lock(settings, req):
        run = _recheck(settings, run)
        try:
            _head(settings, run, {})
            return _tail(settings, run)
        except BaseException as exc:
            _fail(settings, req, run.report, run.undo, exc)
            raise


def setup_many(settings: Settings, reqs: list[Request], report: Reporter) -> tuple[list[dict], list[dict]]:
    """Set up several agents in this one process (one Invoke start-up for all).

    A pipeline: this thread runs each agent's git-facing head (ports, state, `worktree add`) one
    after another, so the ten adds do not queue on the repo lock against each other and the base is
    fetched once; each agent's tail (checkout, files, installs, db) then runs in a thread of its own
    while the next head starts (issue 12).
    Returns (states of those that succeeded, [{adw_id, error, exit_code}] for the rest).
    """
    if len({r.adw_id for r in reqs}) != len(reqs):
        raise bad_input("the same --adw-id is given twice")
    if len(reqs) == 1:
        return [setup(settings, reqs[0], report)], []
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # not on one agent's clock
    from contextlib import ExitStack

    errors: list[dict] = []

    def failed(req: Request, exc: GroveError) -> None:
        report.warn(f"{req.adw_id}: {exc}")
        errors.append({"adw_id": req.adw_id, "error": exc.message, "exit_code": exc.code})

    def tail(run: _Run) -> dict | None:
        try:
            return _tail(settings, run)
        except BaseException as exc:
            if isinstance(exc, Exception) and not isinstance(exc, GroveError):
                # A bug or an unforeseen OSError in one agent must not throw away what the others
                # did: it becomes that agent's error, and the JSON still lists everyone.
                exc = GroveError(f"unexpected {type(exc).__name__}: {exc}", hint="please report it with this line")
            _fail(settings, run.req, run.report, run.undo, exc)
            if not isinstance(exc, GroveError):
                raise
            failed(run.req, exc)
            return None

    runs = []
    for req in reqs:  # every request is checked before anything is written
        try:
            runs.append(_validated(settings, req, report.for_agent(req.adw_id)))
        except GroveError as exc:
            failed(req, exc)
    if runs:
        _validation_passed(settings, report)
    fetched: dict = {}  # one fetch per base for all of them
    shared = deps.SharedInterpreter()
    workers = min(len(reqs), 16)
    futures = []
    locks_of: dict = {}  # a tail's future -> the ExitStack holding its agent's op lock (this thread's)

    def release_finished(block: bool) -> None:
        # Each op lock is an open file: release those of finished tails, and run no head further
        # ahead than the workers can take (45 agents held 45 files and hit EMFILE under ulimit 48).
        pending = [f for f in locks_of if not f.done()]
        if block and len(pending) >= workers:
            wait(pending, return_when=FIRST_COMPLETED)
        for future in [f for f in locks_of if f.done()]:
            locks_of.pop(future).close()

    try:
        with ThreadPoolExecutor(max_workers=workers) as threads:
            for run in runs:
                release_finished(block=True)
                req = run.req
                held = ExitStack()
                try:
                    held.enter_context(_op_lock(settings, req))
                    run = _recheck(settings, run)
                except GroveError as exc:
                    held.close()
                    failed(req, exc)
                    continue
                try:
                    _head(settings, run, fetched, defer_checkout=True)
                except BaseException as exc:
                    _fail(settings, req, run.report, run.undo, exc)
                    held.close()
                    if not isinstance(exc, GroveError):
                        raise
                    failed(req, exc)
                    continue
                run.shared = shared
                future = threads.submit(tail, run)
                futures.append(future)
                locks_of[future] = held
        states = [f.result() for f in futures]
    finally:
        for held in locks_of.values():  # the executor waited for every tail: nothing runs now
            held.close()
    order = {r.adw_id: i for i, r in enumerate(reqs)}
    errors.sort(key=lambda e: order[e["adw_id"]])
    return [s for s in states if s], errors


@dataclass
class _Run:
    """One agent's chain in flight: what validation found and what the steps have made so far."""

    req: Request
    report: Reporter
    branch: str
    base: str
    current: dict | None
    tip: str | None
    undo: _Undo = field(default_factory=_Undo)
    claim: ports.Claim | None = None
    taken: pool.Taken | None = None
    reused: bool = False
    checked_out: bool = True
    shared: deps.SharedInterpreter | None = None  # setup_many's one interpreter discovery
    fast_forward: str | None = None  # a kept branch the base contains: moved to this base commit


def _validated(settings: Settings, req: Request, report: Reporter) -> _Run:
    with report.step("validate", OP) as info:
        branch, base, current, tip = validate(settings, req)
        info["detail"] = branch
    return _Run(req, report, branch, base, current, tip)


def _recheck(settings: Settings, run: _Run) -> _Run:
    """Validation ran before this agent's op lock was held: another process may have set the agent
    up or torn it down since. Its state then differs, and validation runs again, so the chain sees
    an agent that exists now as existing (its install and database kept, its state never removed)."""
    if state.load(settings, run.req.adw_id) == run.current:
        return run
    return _validated(settings, run.req, run.report)


def _validation_passed(settings: Settings, report: Reporter) -> None:
    """Once validation has passed: what is not git-ignored, and the caches validation could not use."""
    deps.remember_projects(settings)
    for name in worktree.ignore_warnings(settings):
        report.warn(f"{name} is not git-ignored in {settings.repo}; run `inv init` to add it")


def _op_lock(settings: Settings, req: Request):
    return locks.locked(settings.lock_path(f"op-{req.adw_id}"), 0, f"{req.adw_id} is already being set up or torn down")


def _head(settings: Settings, run: _Run, fetched: dict, defer_checkout: bool = False) -> None:
    """fetch, ports, the state, the worktree: the steps that mutate the repository and the registries.

    ``fetched`` remembers each base's fetch for the other agents of the same call; ``defer_checkout``
    leaves a new worktree's checkout to the tail.
    """
    req, report, done, path = run.req, run.report, run.undo.steps, settings.worktree_path(run.req.adw_id)
    with report.step("fetch", OP, done) as info:
        if run.current and run.current.get("base_commit") and path.is_dir():
            base_commit, info["outcome"] = run.current["base_commit"], "reused"
        else:
            if (run.base, req.fetch) not in fetched:
                fetched[run.base, req.fetch] = worktree.resolve_base(settings, run.base, req.fetch, report)
            base_commit, info["detail"] = fetched[run.base, req.fetch]
            info["outcome"] = "done" if req.fetch else "skipped"
            if run.tip and run.current is None:  # a branch a teardown kept
                base_commit = _kept_branch_start(settings, run, base_commit)
            elif run.tip:  # resuming on a kept branch: its commits are counted from where it left the base
                base_commit = git.git(settings.repo, "merge-base", base_commit, run.tip) or base_commit
    with report.step("ports", OP, done) as info:
        run.claim = claim = ports.claim(settings, req.adw_id)
        run.undo.claim = not claim.reused
        info["outcome"] = "reused" if claim.reused else "done"
        info["detail"] = f"slot {claim.slot}: " + " ".join(f"{k}={v}" for k, v in claim.ports.items())
    run.undo.state = run.current is None
    fresh = state.new(settings, req.adw_id, run.branch, run.base, base_commit=base_commit, epic_id=req.epic_id,
                      task_name=req.task_name, agent_id=req.agent_id)
    state.update(settings, req.adw_id, lambda s: steps.record_claim(s, claim), create=fresh)
    with report.step("worktree", OP, done) as info:
        # A branch a teardown kept is checked out as it is, into a fresh worktree, not a pooled one.
        kept_branch = run.tip is not None and run.current is None
        run.taken = taken = pool.take(settings, req.adw_id, run.branch, run.base, base_commit,
                                      run.current is not None, run.undo) if req.pool and not kept_branch else None
        if taken:
            info["outcome"] = "pooled"
            report.say(f"  from the pool: {taken.detail}")
        elif worktree.existing(settings, req.adw_id, run.branch):
            run.reused = True
            info["outcome"] = "reused"
        else:
            if run.fast_forward and run.tip:
                _fast_forward(settings, run.branch, run.tip, run.fast_forward)
            run.undo.worktree = True
            run.checked_out = not defer_checkout
            run.undo.branch = run.branch if worktree.add(settings, req.adw_id, run.branch, base_commit,
                                                         new_branch=run.tip is None,
                                                         checkout=run.checked_out) else None
            run.undo.base_commit = base_commit
        info["detail"] = str(path)


def _kept_branch_start(settings: Settings, run: _Run, base_commit: str) -> str:
    """Setting up an id again whose branch a teardown kept (issue 21: it resumed 4 commits behind, silently).

    One rule: a branch the base already contains (its tip is an ancestor of the newest base) starts
    again at the newest base, a fast-forward that loses nothing; a branch with commits of its own
    resumes where it is, and setup says how far behind the base it is. Returns the commit the
    agent's commits count from."""
    assert run.tip is not None
    if git.ok(settings.repo, "merge-base", "--is-ancestor", run.tip, base_commit):
        if run.tip != base_commit:
            run.fast_forward = base_commit
            run.report.say(f"{run.branch} is already in {run.base}: it starts again at the newest {run.base} "
                           f"({base_commit[:10]}), nothing lost")
        return base_commit
    fork = git.git(settings.repo, "merge-base", base_commit, run.tip) or base_commit
    ahead = len(git.commits_between(settings.repo, fork, run.tip))
    behind = len(git.commits_between(settings.repo, fork, base_commit))
    run.report.say(f"resuming {run.branch}: {ahead} commit(s) of its own, {behind} behind {run.base}"
                   + (" (`inv sync` brings them in)" if behind else ""))
    return fork


def _fast_forward(settings: Settings, branch: str, tip: str, to: str) -> None:
    """Move ``branch`` from ``tip`` to ``to`` (a descendant): git refuses if it moved meanwhile."""
    with worktree.repo_lock(settings):
        git.git(settings.repo, "update-ref", "-m", "grove setup: kept branch already in the base, fast-forward",
                f"refs/heads/{branch}", to, tip)


def _tail(settings: Settings, run: _Run) -> dict:
    """The checkout (when the head deferred it), submodules, the files, install, db; the final state."""
    req, report, done, path, taken = run.req, run.report, run.undo.steps, settings.worktree_path(run.req.adw_id), run.taken
    if not run.checked_out:
        with report.step("checkout", OP, done):
            worktree.checkout_new(settings, path)
    assert run.claim is not None  # _head() has claimed the ports: the tail runs only after it
    values = steps.env_values(settings, req.adw_id, run.claim.ports)
    # Install and db are not repeated once done: a re-run must not wipe the rows an agent wrote
    # (issue 10, defect 6). `--reset-db` (or `inv db.reset`) resets on purpose.
    # Only in the same worktree: one made anew (its directory was lost) has no install and no sqlite db.
    earlier = {name: info.get("outcome") for name, info in (run.current or {}).get("steps", {}).items()} \
        if run.reused else {}
    pooled = _pooled(taken)
    written: list[str] = []
    for resource in table.PREPARED:
        assert resource.prepare is not None
        with report.step(resource.name, OP, done, long=resource.long) as info:
            if resource.switch and not getattr(req, resource.switch):
                info["outcome"], info["detail"] = "skipped", "" if resource.writes_files else f"--no-{resource.switch}"
            else:
                agent = Agent(settings, req.adw_id, path, values, earlier=earlier.get(resource.name),
                              reset=req.reset_db, pooled=pooled.get(resource.name, {}), shared=run.shared,
                              created=run.undo.databases)
                info["outcome"], info["detail"], files = resource.prepare(agent)
                written.extend(files)
        if resource is table.FILES[-1]:
            steps.files_written(settings, path, written, report, hid=taken.hid if taken else None)
    return state.update(settings, req.adw_id, lambda s: _finish(s, done, taken))


def _pooled(taken: pool.Taken | None) -> dict[str, dict]:
    """What the pool already did, for the resources that take it into account."""
    if not taken:
        return {}
    return {"install": {"install_only": taken.install_only},
            "db": {} if taken.db else {"db_reason": taken.db_reason}}


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
        # This run made the worktree: a rollback never refuses over ADW_ARCHIVE_LIMIT_MB, it archives (issue 20).
        _quietly(report, "remove the worktree",
                 lambda: worktree.remove(settings, path, salvage=True, force=True, reason="setup rollback"))
    if undo.branch:
        branch, base = undo.branch, undo.base_commit or "HEAD"
        _quietly(report, "delete the branch", lambda: worktree.delete_branch(settings, branch, base))
    if undo.state:
        _quietly(report, "remove the state", lambda: state.discard(settings, req.adw_id))
        # Its `created` event is in the stream: say that it is gone again (issue 22).
        events.emit(settings, "rolled_back", req.adw_id, "created", None, step=step, error=reason)
    if undo.claim:
        _quietly(report, "release the port claim", lambda: ports.release(settings, req.adw_id))
    if isinstance(exc, GroveError):
        exc.message = f"setup of {req.adw_id} failed at {step}: {exc.message} (rolled back)"


def _quietly(report: Reporter, what: str, action) -> None:
    """A rollback step that fails must not hide the original error; say what is left behind."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - reported, and `inv doctor` finds what is left
        report.warn(f"rollback could not {what}: {exc}; `inv doctor` will show it")
