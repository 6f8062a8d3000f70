"""The setup chain: from nothing to a ready, isolated agent worktree, one small step at a time.

Order: validate, fetch, ports (claim), worktree, include, ports_env, env, repoint, install, db; the state
is written once the claim is held and again when the chain ends. Ports are claimed before any
git work so an agent that cannot get a slot fails fast and leaves nothing behind.

Idempotent: re-running finishes missing steps and keeps the same slot and branch.
Atomic in effect: on failure it undoes what this run created (unless ``keep``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import db, deps, envfiles, git, ids, locks, ports, repoint, state, worktree
from .config import Settings
from .errors import GroveError, bad_input
from .report import Reporter

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
    keep: bool = False


@dataclass
class _Undo:
    """What this run created, so a failure can remove exactly that."""

    claim: bool = False
    state: bool = False
    worktree: bool = False
    branch: str | None = None  # the branch name, when this run created it
    steps: dict = field(default_factory=dict)


def validate(settings: Settings, req: Request) -> tuple[str, str, dict | None]:
    """Check id, branch, base and config before anything changes: (branch, base, existing state)."""
    ids.check_id(req.adw_id)
    ids.check_unique_case(settings, req.adw_id)
    current = state.load(settings, req.adw_id)
    branch = req.branch or (current or {}).get("branch") or ids.default_branch(req.adw_id, req.epic_id, req.task_name)
    base = req.base or (current or {}).get("base_branch") or settings.base_branch
    git.check_branch_name(settings.repo, branch)
    git.check_branch_name(settings.repo, base)
    if current is None:
        worktree.check_base(settings, base, req.fetch)
    if current and current["branch"] != branch:
        raise bad_input(f"agent {req.adw_id} already works on {current['branch']}, not {branch}",
                        "drop --branch, or tear the agent down first")
    if current is None and git.branch_exists(settings.repo, branch):
        raise bad_input(f"branch {branch} already exists and belongs to no Grove agent of this id",
                        "pick another --branch, or delete that branch if it is yours")
    return branch, base, current


def setup(settings: Settings, req: Request, report: Reporter) -> dict:
    """Run the whole chain for one agent; returns its final state."""
    with report.step("validate", OP) as info:
        branch, base, current = validate(settings, req)
        for name in worktree.ignore_warnings(settings):
            report.warn(f"{name} is not git-ignored in {settings.repo}; run `inv init` to add it")
        info["detail"] = branch
    # One setup per id at a time; a second one is told so at once instead of racing the first.
    with locks.locked(settings.lock_path(f"op-{req.adw_id}"), 0, f"{req.adw_id} is already being set up or torn down"):
        undo = _Undo()
        try:
            return _chain(settings, req, report, branch, base, current, undo)
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


def _chain(settings, req, report, branch, base, current, undo) -> dict:
    path = settings.worktree_path(req.adw_id)
    steps = undo.steps
    with report.step("fetch", OP, steps) as info:
        if current and current.get("base_commit") and path.is_dir():
            base_commit, info["outcome"] = current["base_commit"], "reused"
        else:
            base_commit, info["detail"] = worktree.resolve_base(settings, base, req.fetch, report)
            info["outcome"] = "done" if req.fetch else "skipped"
    with report.step("ports", OP, steps) as info:
        claim = ports.claim(settings, req.adw_id)
        undo.claim = not claim.reused
        info["outcome"] = "reused" if claim.reused else "done"
        info["detail"] = f"slot {claim.slot}: " + " ".join(f"{k}={v}" for k, v in claim.ports.items())
    undo.state = current is None
    fresh = state.new(settings, req.adw_id, branch, base, base_commit=base_commit, epic_id=req.epic_id,
                      task_name=req.task_name, agent_id=req.agent_id)
    state.update(settings, req.adw_id, lambda s: _record_claim(s, claim), create=fresh)
    with report.step("worktree", OP, steps) as info:
        if worktree.existing(settings, req.adw_id, branch):
            info["outcome"] = "reused"
        else:
            undo.worktree = True
            undo.branch = branch if worktree.add(settings, req.adw_id, branch, base_commit) else None
        info["detail"] = str(path)
    values = ports.env_lines(claim.ports)
    written: list[str] = []
    for name, step in FILE_STEPS.items():
        with report.step(name, OP, steps) as info:
            if not req.files:
                info["outcome"] = "skipped"
                continue
            info["outcome"], info["detail"], files = step(settings, path, values)
            written.extend(files)
    worktree.hide(settings, path, written)
    with report.step("install", OP, steps, long=True) as info:
        info["outcome"], info["detail"] = install(settings, path, req.install)
    with report.step("db", OP, steps, long=True) as info:
        info["outcome"], info["detail"] = reset_db(settings, path, values, req.db)
    return state.update(settings, req.adw_id, lambda s: _finish(s, steps))


# Each step below works alone too (the single-step tasks call them): (outcome, detail, files written).

def copy_included(settings: Settings, path: Path, values: dict[str, str]) -> tuple[str, str, list[str]]:
    from . import include

    return include.copy_into(settings, path)


def write_ports_env(settings: Settings, path: Path, values: dict[str, str]) -> tuple[str, str, list[str]]:
    changed = envfiles.write_if_changed(path / envfiles.PORTS_FILE, envfiles.ports_text(values), 0o644)
    return ("done" if changed else "unchanged"), envfiles.PORTS_FILE, [envfiles.PORTS_FILE]


def merge_env(settings: Settings, path: Path, values: dict[str, str]) -> tuple[str, str, list[str]]:
    notes, written = [], []
    for name in settings.env_files:
        note = envfiles.merge_one(settings.repo / name, path / name, values)
        notes.append(f"{name}: {note}")
        if not note.startswith("skipped"):
            written.append(name)
    return "done", "; ".join(notes), written


def repoint_configs(settings: Settings, path: Path, values: dict[str, str] | None = None) -> tuple[str, str, list[str]]:
    notes, written = [], []
    for name in settings.path_configs:
        if not (path / name).is_file():
            notes.append(f"{name}: absent")
            continue
        changed, made = repoint.repoint_file(path / name, settings.repo, settings.trees_path, path)
        notes.append(f"{name}: {'rewritten' if changed else 'unchanged'}")
        written.append(name)
        written.extend(str(d.relative_to(path)) for d in made)
    return "done", "; ".join(notes), written


# The steps that write files into the worktree, in chain order; the single-step tasks use it too.
FILE_STEPS = {"include": copy_included, "ports_env": write_ports_env, "env": merge_env, "repoint": repoint_configs}


def _record_claim(s: dict, claim: ports.Claim) -> None:
    s.update(slot=claim.slot, backend_port=claim.ports["BACKEND_PORT"],
             frontend_port=claim.ports["FRONTEND_PORT"], ports=dict(claim.ports))
    if s["status"] == "failed":  # a setup re-run after a kept failure starts over as created
        state.apply_status(s, "created")


def install(settings: Settings, path: Path, enabled: bool = True) -> tuple[str, str]:
    if not enabled:
        return "skipped", "--no-install"
    notes = []
    for name in settings.install_dirs:
        directory = path / name
        if not directory.is_dir():
            notes.append(f"{name}: missing, skipped")
            continue
        ran = deps.install(directory, settings.install_timeout)
        notes.append(f"{name}: {'+'.join(ran) if ran else 'no project'}")
    return "done", "; ".join(notes)


def reset_db(settings: Settings, path: Path, values: dict[str, str], enabled: bool = True) -> tuple[str, str]:
    if not enabled:
        return "skipped", "--no-db"
    if not settings.db_reset:
        return "skipped", "ADW_DB_RESET is empty"
    env = dict(os.environ, **values, ADW_ID=path.name, ADW_WORKTREE=str(path))
    if not db.reset(path, settings.db_reset, env, settings.install_timeout):
        return "skipped", f"{settings.db_reset} absent"
    return "done", settings.db_reset


def _finish(s: dict, steps: dict) -> None:
    s["steps"].update(steps)
    s["error_message"] = None


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
    if undo.worktree:
        _quietly(report, "remove the worktree", lambda: _remove_worktree(settings, path))
    if undo.branch:
        def drop_branch() -> None:
            with worktree.repo_lock(settings):
                git.git(settings.repo, "branch", "-D", "--", undo.branch)
        _quietly(report, "delete the branch", drop_branch)
    if undo.state:
        _quietly(report, "remove the state", lambda: _remove_state(settings, req.adw_id))
    if undo.claim:
        _quietly(report, "release the port claim", lambda: ports.release(settings, req.adw_id))
    if isinstance(exc, GroveError):
        exc.message = f"setup of {req.adw_id} failed at {step}: {exc.message} (rolled back)"


def _remove_worktree(settings: Settings, path: Path) -> None:
    with worktree.repo_lock(settings):
        if git.worktree_for(settings.repo, path):
            git.git(settings.repo, "worktree", "remove", "--force", path)
    if path.exists():
        worktree.safe_rmtree(settings, path)


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
