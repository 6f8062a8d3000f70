"""The warm pool: ready worktrees made before an agent asks for one (issue 12).

`inv pool --size N` fills ``trees/.pool/<name>``: a detached worktree at the base, env files with
placeholder ports (0: no agent's, and a server binding 0 gets a random port), dependencies
installed in relocatable venvs, database reset. `inv setup` then takes a ready one instead of
starting from nothing:

- **claim**: under the pool lock an entry goes from ``ready`` to ``taking`` (two setups never take
  the same one);
- **move**: under the repo lock, ``git worktree move`` to ``trees/<adw_id>`` and
  ``git checkout --no-track -b <branch> <newest base>``: only the files the base changed are written;
- **refresh**: the pool's env files are dropped so the chain's own file steps write them fresh
  from the main checkout with the agent's ports; dependencies are re-installed only in install
  dirs whose lock files changed (or whose venv still points at the pool path); the database is
  reset again only when its inputs changed (``db_inputs_changed``).

Safety: every entry is recorded in ``agents/.grove/pool.json`` before its worktree exists, and an
entry's worktree is deleted only after proving it holds nothing: detached at the recorded commit,
no tracked change and no untracked file (`git status`). A dirty one is kept and reported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, NoReturn, TypeVar

from ..resources import agentdb, deps, envfiles, generated, table
from ..resources import db as db_resource
from ..core import git, ids, liveness, locks, proc, state
from ..safety import owned, preserve
from . import steps, worktree
from ..core.config import Settings
from ..core.errors import GroveError
from ..core.faults import announce, fault, hold
from ..core.files import sha256
from ..core.report import Reporter

POOL_DIR = ".pool"
PLACEHOLDER_PORT = 0
# Files whose change means an install dir's dependencies must be installed again.
LOCK_FILES = ("uv.lock", "pyproject.toml", ".python-version", ".python-versions", "uv.toml", "package.json",
              "bun.lock", "bun.lockb", "package-lock.json", "npm-shrinkwrap.json")


class Taken:
    """A pooled worktree handed to an agent, and what the rest of the chain still has to do.
    (A plain class: a dataclass costs half a millisecond at import, on every setup.)"""

    def __init__(self, name: str, commit: str, install_only: tuple[str, ...], db: bool, db_reason: str,
                 detail: str, hid: tuple[frozenset[str], list[str]] | None = None):
        self.name = name
        self.commit = commit  # the commit the pool made it at
        self.install_only = install_only  # install dirs to install again (empty: none)
        self.db = db  # reset the database again
        self.db_reason = db_reason
        self.detail = detail
        # The fill's hiding, still true (see _hiding_still_true): (files it covered, those left visible).
        self.hid = hid


def pool_root(settings: Settings) -> Path:
    return settings.trees_path / POOL_DIR


def registry_path(settings: Settings) -> Path:
    return settings.grove_path / "pool.json"


def _lock(settings: Settings):
    return locks.locked(settings.lock_path("pool"), settings.lock_timeout, "the pool is busy")


def read(settings: Settings) -> dict:
    data = locks.read_json(registry_path(settings), "pool registry")
    if data is None:
        return {"version": 1, "size": 0, "entries": {}}
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise GroveError(f"pool registry {registry_path(settings)} is not a Grove pool registry",
                         hint="fix or move it aside; `inv doctor` shows the pool")
    for name, entry in data["entries"].items():
        _check_entry(settings, name, entry)
    return data


STATUSES = ("filling", "ready", "refreshing", "taking", "draining", "kept")


def _check_entry(settings: Settings, name: str, entry: object) -> None:
    """Every entry must be one Grove made: its own name, a known status, and its worktree at exactly
    trees/.pool/<name>. An edited record pointing elsewhere (a user's worktree) is refused whole:
    the pool removes and moves worktrees, and must never act on one it did not create."""
    expected = os.path.realpath(pool_root(settings) / name)
    if (not isinstance(entry, dict) or entry.get("name") != name or entry.get("status") not in STATUSES
            or not isinstance(entry.get("path"), str) or os.path.realpath(entry["path"]) != expected):
        raise GroveError(f"pool registry {registry_path(settings)}: entry {name!r} is not one Grove made "
                         f"(expected its worktree at {expected})",
                         hint="fix or move the registry aside; Grove acts on no pool entry until then")


def _write(settings: Settings, data: dict) -> None:
    locks.atomic_write_json(registry_path(settings), data)


T = TypeVar("T")


def _update(settings: Settings, change: Callable[[dict], T]) -> T:
    """Locked read-modify-write of the pool registry; returns what ``change`` returns."""
    with _lock(settings):
        data = read(settings)
        result = change(data)
        _write(settings, data)
        return result


def placeholder_values(settings: Settings, name: str) -> dict[str, str]:
    """What a pool entry's env files hold until an agent takes it: port 0 for every port."""
    return steps.env_values(settings, name, {port: PLACEHOLDER_PORT for port, _ in settings.port_bases})


def included_state(settings: Settings) -> dict[str, list[int]]:
    """The main checkout's files `.worktreeinclude` copies: path -> [size, mtime_ns] (copies keep mtimes)."""
    from ..resources import include

    return generated.fingerprints(settings.repo, include.listed(settings))


def env_digest(settings: Settings) -> str:
    """What the env files are made from: the main checkout's copies (or their samples)."""
    h = sha256()
    for name in settings.env_files:
        source, _ = envfiles.source_for(settings.repo / name)
        h.update(name.encode() + b"\0")
        if source is not None:
            h.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Filling and draining


def fill(settings: Settings, size: int, base: str | None, report: Reporter, *, fetch: bool = True,
         dry_run: bool = False) -> dict:
    """Make the pool hold ``size`` usable entries: create the missing ones, drain the extra ones.
    ``dry_run``: say which, changing nothing: no repair, fetch, lock or record (issue 21)."""
    base = base or settings.base_branch
    if size > 0:  # bad input changes nothing (exit 2): checked before any lock or file is made
        git.check_branch_name(settings.repo, base)
        worktree.check_base(settings, base, fetch)
    fixed = reconcile(settings) if not dry_run else []
    commit = None
    if size > 0 and not dry_run:
        commit, _ = worktree.resolve_base(settings, base, fetch, report)

    def plan(data: dict) -> tuple[list[str], list[str]]:
        data["size"] = size
        live = [n for n, e in data["entries"].items() if e["status"] in ("ready", "filling")]
        # Entries on another base, or the oldest, go first when the pool shrinks; and they count for
        # nothing towards the size: `--size 2 --base dev` over two entries on main made none on dev.
        live.sort(key=lambda n: (data["entries"][n].get("base") == base, data["entries"][n].get("created_at") or ""))
        here = sum(data["entries"][n].get("base") == base for n in live)
        new = [f"p-{ids.new_id()}" for _ in range(max(0, size - here))]
        for name in new:
            data["entries"][name] = {"name": name, "path": str(pool_root(settings) / name), "status": "filling",
                                     **liveness.stamp(), "base": base, "commit": commit, "created_at": state.now()}
        extra = [n for n in live if data["entries"][n]["status"] == "ready"][:max(0, len(live) + len(new) - size)]
        # Entries kept for holding changes are looked at again: once cleaned up, they go.
        extra += [n for n, e in data["entries"].items() if e["status"] == "kept"]
        for name in extra:
            data["entries"][name].update(status="draining", **liveness.stamp())
        return new, extra

    if dry_run:
        new, extra = plan(read(settings))  # a copy read from disk: the plan is worked out, never written
        return {"dry_run": True, "size": size, "base": base, "would_create": len(new), "would_drain": extra}
    new, extra = _update(settings, plan)
    created, failed = [], []
    if new:
        assert commit is not None  # plan() makes entries only when size > 0, and then the base was resolved
        for name, error in zip(new, proc.in_parallel([lambda n=n: _make(settings, n, commit, report) for n in new])):
            (failed.append({"name": name, "error": str(getattr(error, "message", error))}) if error
             else created.append(name))
    removed, kept = [], []
    for name in extra:
        reason = _remove(settings, name)
        (kept.append({"name": name, "reason": reason}) if reason else removed.append(name))
    refreshed: list[str] = []
    if commit is not None:  # entries made at an older base follow it (issue 24)
        outcome = refresh(settings, base, commit, report)
        refreshed, kept, failed = outcome["refreshed"], kept + outcome["kept"], failed + outcome["failed"]
    return {"size": size, "created": created, "removed": removed, "kept": kept, "failed": failed,
            "refreshed": refreshed, "repaired": fixed, "entries": show(settings)["entries"]}


def _make(settings: Settings, name: str, commit: str, report: Reporter) -> None:
    """Create one recorded entry; on failure remove what was made (it holds nothing but Grove's work)."""
    path = pool_root(settings) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with worktree.repo_lock(settings):
            git.git(settings.repo, "worktree", "add", "--quiet", "--detach", "--no-checkout", path, commit,
                    timeout=settings.git_timeout)
        fault("pool", "after", "add")
        worktree.checkout_new(settings, path)  # a private index: a kill midway leaves no index.lock
        if (path / ".gitmodules").is_file():
            raise GroveError("the pool cannot hold this repository's worktrees: it has submodules, and "
                             "`git worktree move` refuses a worktree with submodules",
                             hint="use `inv setup` without a pool (`inv pool --size 0`)")
        values = placeholder_values(settings, name)
        digest = env_digest(settings)  # before the env step reads the sources: a later edit is a change
        included = included_state(settings)  # likewise for .worktreeinclude's files (issue 20, item 8)
        written = _write_files(settings, path, values)
        _relocatable_venvs(settings, path)
        deps.install_worktree(settings, path)
        # A Postgres database per agent (ADW_DB_URL) is named after the agent: it is cloned at take,
        # the pool only resets databases that live in the worktree.
        db = "skipped" if agentdb.configured(settings) else db_resource.reset_db(settings, path, values)[0]
        own, own_tracked, own_ignored = _own_files(path), _own_tracked(path), _own_ignored(settings, path)
        written = _as_left(path, written)
        _update(settings, lambda data: data["entries"][name].update(
            status="ready", pid=None, ready_at=state.now(), db=db, env_digest=digest, own=own, included=included,
            own_tracked=own_tracked, own_ignored=own_ignored, installed=list(deps.install_dirs(settings, path)),
            installs_detected=settings.detect_installs, db_reset=settings.db_reset, **written))
        report.say(f"✓ pool      {name} ready at {commit[:10]}")
        if own_tracked:
            report.warn(f"pool {name}: the fill itself changed tracked files: {', '.join(sorted(own_tracked))} "
                        "(an install rewrote a stale lock file?); the pool counts them as its own")
    except BaseException:
        try:
            _discard(settings, name, path)
        except Exception as exc:  # noqa: BLE001 - reported; reconcile/doctor finds what is left
            report.warn(f"pool: could not remove the failed entry {name}: {exc}")
        raise


def _write_files(settings: Settings, path: Path, values: dict[str, str]) -> dict:
    """The pool's env files, with placeholder ports, hidden when tracked; repoint runs at take: it
    writes the final path, and the configs it rewrites are hidden now, as they are. Returns the
    entry's record of them (``_as_left`` adds the fingerprints once the whole fill is done):
    - ``own_written``: the files it wrote (one no longer as the fill left it was edited by someone:
      _fills_files_edited, _save_work_done_since);
    - ``hidden``: the tracked ones among them it gave skip-worktree (a take at the same commit with
      none has nothing to restore: _is_the_base_as_it_is);
    - ``hidden_as_is``: the tracked configs hidden with the commit's content;
    - ``hid``: what the take's own hiding would find, so a take at the same commit need not ask git
      again while the ignore rules are unchanged (issue 24: two git processes on every take)."""
    _, written = steps.write_files(settings, path.name, path, values, tuple(r for r in table.FILES if r.in_pool))
    configs = [c for c in settings.path_configs if c not in written and (path / c).is_file()]
    hidden, visible = worktree.hide_files(settings, path, [*written, *configs])
    return {"own_written": written, "hidden": [h for h in hidden if h in written],
            "hidden_as_is": [h for h in hidden if h not in written],
            "hid": {"paths": [*written, *configs], "visible": visible, "key": worktree.ignore_key(settings)}}


def _as_left(path: Path, written: dict) -> dict:
    """``_write_files``'s record, its files as path -> [size, mtime_ns] as the whole fill left them:
    its install or database reset may write to an env file too (a reset script adding DATABASE_URL),
    which is the fill's own work, not an edit by someone (_fills_files_edited)."""
    return {**written, "own_written": generated.fingerprints(path, written["own_written"]),
            "hidden_as_is": generated.fingerprints(path, written["hidden_as_is"])}


def _fills_record(entry: dict) -> dict[str, list[int]]:
    """Every file the fill wrote or hid as it was, with the fingerprint it left it with."""
    return {**(entry.get("hidden_as_is") or {}), **(entry.get("own_written") or {})}


def _relocatable_venvs(settings: Settings, path: Path) -> None:
    """Make each uv project's venv relocatable before `uv sync` fills it, so its console scripts
    still run after `git worktree move` (DESIGN.md pitfalls: venvs carry absolute paths)."""
    for name in deps.install_dirs(settings, path):
        directory = path / name
        if "uv" in deps.plan(directory) and not (directory / ".venv").exists():
            proc.run([deps.require_tool("uv", directory), "venv", "--quiet", "--relocatable", ".venv"],
                     cwd=directory, env=deps.install_env(), timeout=settings.install_timeout,
                     what=f"uv venv in {directory}")


def _discard(settings: Settings, name: str, path: Path) -> None:
    """Remove an entry this process was making (recorded, and never handed to anyone)."""
    _remove_worktree(settings, path)
    _update(settings, lambda data: data["entries"].pop(name, None))


def _remove_worktree(settings: Settings, path: Path, entry: dict | None = None) -> None:
    """Remove a pool entry's worktree through worktree.remove, the one removal path (issue 20, item 5):
    a commit someone made there that only its HEAD reflog still reaches goes to refs/grove-backup/,
    ignored files worth keeping to the archive. The caller proved it holds no one's uncommitted work
    (or made it itself just now), so no salvage ref is made for the fill's own files."""
    found = git.worktree_for(settings.repo, path)
    if found is not None and worktree.is_stillborn(found):
        if worktree.repair_stillborn(settings, path):
            return  # a fill killed inside `git worktree add --no-checkout`: nothing there but git's .git file
        # Files landed there since: git's own "initializing" lock (our dead fill's) goes, so that the
        # removal below, which archives what is worth keeping, can go ahead.
        admin = git.admin_dir(settings.repo, path)
        if admin is not None:
            (admin / "locked").unlink(missing_ok=True)
    if found is not None and not path.is_dir():
        _forget_gone(settings, path, found)
        found = None
    if found is None and not (path.exists() or os.path.islink(path)):
        return
    own = (entry or {}).get("own_ignored") or {}
    worktree.remove(settings, path, salvage=False, entry=found, force=True, proven_clean=True,
                    values=placeholder_values(settings, path.name), reason="pool drain",
                    also_own=lambda rel: generated.unchanged(path / rel, own.get(rel)))


def _forget_gone(settings: Settings, path: Path, entry: dict | None = None) -> None:
    """Forget git's entry for a pool worktree whose directory is gone (deleted or moved by hand).
    Its HEAD and reflog in git's admin entry may hold commits someone made there and no ref
    reaches: they go to refs/grove-backup/ first, as doctor does for an agent's (DESIGN.md)."""
    entry = entry or git.worktree_for(settings.repo, path)
    if entry is None:
        return
    worktree._keep_worktree_commits(settings, path, entry)
    with worktree.repo_lock(settings):
        git.prune_entry(settings.repo, path)


def proven_empty(settings: Settings, entry: dict, removing: bool = False) -> str | None:
    """None when the entry's worktree holds nothing but Grove's work; else why it must be kept.
    ``removing``: the caller removes it next, through worktree.remove, which moves every file of a
    worktree git cannot read to the archive: such an entry is then no reason to keep anything."""
    return _proof(settings, entry, removing)[0]


def _proof(settings: Settings, entry: dict, removing: bool = False) -> tuple[str | None, str | None]:
    """proven_empty's answer, and the `git status --porcelain -z` it read (None when it read none)."""
    path = Path(entry["path"])
    if not path.is_dir():
        return None, None
    # Read from git's own files where they answer plainly (a take is on every pooled setup's clock,
    # issue 24); git itself is asked where they do not.
    known = git.linked_worktree_paths(settings.repo)
    if (os.path.realpath(path) not in known) if known is not None else git.worktree_for(settings.repo, path) is None:
        return f"{path} is not a worktree git knows: its files are in no commit", None
    head_text = git.head_of(path)
    problem = preserve.checkout_problem(path, git.admin_dir(settings.repo, path)) if head_text is None else None
    if problem:
        # git run there would not read this worktree: a kill inside `git worktree remove` deleted its
        # .git among the files (or someone did). It is never handed out; a removal moves every file of
        # it to the archive (worktree._remove_broken), so there it is no reason to keep anything.
        return (None if removing else problem), None
    on_branch = head_text.startswith("ref: ") if head_text else git.ok(path, "symbolic-ref", "-q", "HEAD")
    if on_branch:
        return f"{path} is on a branch, not detached as the pool left it", None
    head = head_text or git.rev(path, "HEAD")
    if head is None:  # HEAD still git's null placeholder: a kill inside `git worktree add`, no commit made
        head = entry.get("commit")
        if head is None:
            return f"{path} has no HEAD commit and none recorded: its files cannot be compared with a commit", None
        return _unless_only_the_fills(path, entry, worktree.status_against(path, head)), None
    if entry.get("commit") and head != entry["commit"]:
        return f"{path} is at {head[:10]}, not at the pool's {entry['commit'][:10]}: someone committed there", None
    index = git.own_admin_dir(path) / "index" if head_text else \
        Path(git.git(path, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    if not index.exists():  # killed between `worktree add --no-checkout` and the checkout
        return _unless_only_the_fills(path, entry, worktree.status_against(path, head)), None
    raw = git.git(path, "status", "--porcelain", "-z", "--untracked-files=all")
    return _unless_only_the_fills(path, entry, raw) or _fills_files_edited(path, entry), raw


def _fills_files_edited(path: Path, entry: dict) -> str | None:
    """Why the entry must be kept when a file the fill wrote or hid was edited since: git status
    cannot see it (ignored, or skip-worktree), and a take rewrites it (the env files), resets it or
    repoints it. One deleted held nothing of anyone's (placeholders, or the commit's content)."""
    edited = [rel for rel, fingerprint in _fills_record(entry).items()
              if os.path.lexists(path / rel) and not generated.unchanged(path / rel, fingerprint)]
    return f"{path} has edits to files the pool wrote or hid: {', '.join(edited[:5])}" if edited else None


def _unless_only_the_fills(path: Path, entry: dict, raw: str) -> str | None:
    """None when a `status --porcelain -z` of the entry shows nothing but the fill's own work; else why not."""
    # A tracked file missing from disk is no one's work (its content is in the commit); anything
    # untracked or changed may be, except the untracked files the fill itself made (a reset
    # script's database that is not git-ignored), as long as they are as the fill left them.
    work = [e[3:] for e in raw.split("\0") if len(e) > 3 and e[:2] not in (" D", "D ")]
    fills = _still_the_fills(path, entry, work)
    work = [w for w in work if w not in fills]
    if work:
        return f"{path} has changes: {', '.join(work[:5])}"
    return None


def _still_the_fills(path: Path, entry: dict, rels: list[str]) -> set[str]:
    """Those of ``rels`` that are the fill's own files as it left them: untracked ones it made (a
    reset script's database that is not git-ignored) with the size and mtime it recorded, and
    tracked ones its install rewrote (a stale uv.lock) with the content it left. Otherwise every
    entry was "kept", none served, none drained (issue 20, item 9)."""
    own, own_tracked = entry.get("own") or {}, entry.get("own_tracked") or {}
    mine = _hashes(path, [rel for rel in rels if rel in own_tracked])
    return {rel for rel in rels if generated.unchanged(path / rel, own.get(rel))
            or (rel in own_tracked and mine.get(rel) == own_tracked[rel])}


def _own_files(path: Path) -> dict[str, list[int]]:
    """The untracked, not ignored files a fill made (its installs and db reset): path -> [size, mtime]."""
    raw = git.git(path, "status", "--porcelain", "-z", "--untracked-files=all")
    return generated.fingerprints(path, [e[3:] for e in raw.split("\0") if e[:3] == "?? "])


def _own_ignored(settings: Settings, path: Path) -> dict[str, list[int]]:
    """The ignored files a fill made that the archive would keep (a reset's database): path ->
    [size, mtime], so a drain leaves them out only while they are as the fill left them (issue 20)."""
    from ..safety import archive

    return generated.fingerprints(path, archive.worth_keeping(path, settings.regenerable_dirs))


def _own_tracked(path: Path) -> dict[str, str]:
    """The tracked files a fill changed (its installs and db reset), path -> the blob hash it left."""
    raw = git.git(path, "diff", "HEAD", "--name-only", "-z", "--no-renames", "--diff-filter=d")
    return _hashes(path, [p for p in raw.split("\0") if p])


def _hashes(path: Path, rels: list[str]) -> dict[str, str]:
    rels = [r for r in rels if (path / r).is_file()]
    if not rels:
        return {}
    out = git.git(path, "hash-object", "--", *rels).split("\n")
    return dict(zip(rels, out))


def _remove(settings: Settings, name: str) -> str | None:
    """Delete a drained entry after proving it holds no work; returns the reason when it is kept."""
    entry = read(settings)["entries"].get(name)
    if entry is None:
        return None
    reason = proven_empty(settings, entry, removing=True)
    if reason:
        _update(settings, lambda data: data["entries"].get(name, {}).update(status="kept", pid=None, reason=reason))
        return reason
    _remove_worktree(settings, Path(entry["path"]), entry)
    _update(settings, lambda data: data["entries"].pop(name, None))
    return None


def reconcile(settings: Settings) -> list[dict]:
    """Repair what dead fillers, takers and drainers left (doctor's pool checks with --fix): back
    to ready when proven clean, else drop records whose worktree is gone. A half-taken entry whose
    worktree already moved is left for `inv setup --adw-id <id>` to finish. Returns the repairs."""
    return [p for p in check(settings, fix=True) if p.get("fixed")]


def _entry_problem(settings: Settings, entry: dict) -> dict | None:
    status, path, name = entry["status"], Path(entry["path"]), entry["name"]
    alive = liveness.holder_alive(entry)  # pid and start time: a reused pid fills nothing (issue 20, item 12)
    if status in ("filling", "taking", "draining", "refreshing") and alive:
        return None
    if status == "taking":
        target = settings.worktree_path(entry.get("adw_id") or "")
        if not path.exists() and target.exists():
            return {"kind": "pool_take_interrupted", "name": name, "fix": None, "adw_id": entry.get("adw_id"),
                    "detail": f"setup of {entry.get('adw_id')} died while taking pool entry {name}",
                    "hint": f"run `inv setup --adw-id {entry.get('adw_id')}` again to finish it"}
    if status == "kept":
        return {"kind": "pool_entry_kept", "name": name, "fix": None, "detail": entry.get("reason", ""),
                "hint": f"move what you need out of {path}; then `inv pool --size N` removes it"}
    if not path.exists():
        return {"kind": "pool_entry_gone", "name": name, "detail": f"pool entry {name}: {path} is gone",
                "fix": "drop the record (and git's stale entry for exactly that path)"}
    if status == "ready":
        return None
    verb = {"filling": "filling", "taking": "taking", "draining": "draining", "refreshing": "refreshing"}[status]
    return {"kind": "pool_dead_process", "name": name, "detail": f"pool entry {name}: the process {verb} it died",
            "fix": "remove it if it was being filled or drained, else back to ready; kept when it holds changes"}


def _repair(settings: Settings, name: str, entry: dict, problem: dict) -> None:
    path = Path(entry["path"])
    if problem["kind"] == "pool_entry_gone":
        _forget_gone(settings, path)
        _update(settings, lambda data: data["entries"].pop(name, None))
    elif entry["status"] == "refreshing":  # finish the refresh a dead process began
        _set(settings, name, **liveness.stamp())
        problem["kept"] = _refresh_entry(settings, name, Reporter(quiet=True), resumed=True)
    elif entry["status"] == "draining":  # finish the drain: a kill inside `git worktree remove` leaves half a checkout
        problem["kept"] = _remove(settings, name)
        if problem["kept"]:
            return
    elif entry["status"] == "filling" or not entry.get("ready_at"):
        reason = proven_empty(settings, entry, removing=True)
        if reason:
            _update(settings, lambda data: data["entries"][name].update(status="kept", pid=None, reason=reason))
            problem["kept"] = reason
            return
        _discard(settings, name, path)
    else:
        reason = proven_empty(settings, entry)
        new = {"status": "kept", "reason": reason} if reason else {"status": "ready"}
        _update(settings, lambda data: data["entries"][name].update(pid=None, adw_id=None, **new))
    problem["fixed"] = True


def check(settings: Settings, fix: bool = False) -> list[dict]:
    """The pool's part of `inv doctor`: dead processes' leftovers, gone entries, stray directories."""
    if not registry_path(settings).exists() and not pool_root(settings).is_dir():
        return []
    data = read(settings)
    problems = []
    for name, entry in data["entries"].items():
        problem = _entry_problem(settings, entry)
        if problem:
            problems.append(dict(problem, fixed=False))
    recorded = {os.path.realpath(e["path"]) for e in data["entries"].values()}
    if pool_root(settings).is_dir():
        for child in sorted(pool_root(settings).iterdir()):
            if os.path.realpath(child) not in recorded:
                problems.append({"kind": "pool_unknown_directory", "fixed": False, "path": str(child),
                                 "detail": f"{child} is in the pool directory but not in the pool's records",
                                 "fix": None, "hint": "Grove did not record it, so it leaves it: move it yourself"})
    if fix:
        for p in problems:
            if p["fix"]:
                try:
                    _repair(settings, p["name"], data["entries"][p["name"]], p)
                except GroveError as exc:  # e.g. git refuses a worktree killed inside `worktree add`
                    p["hint"] = f"could not repair it: {exc.message}"
    return problems


def show(settings: Settings) -> dict:
    data = read(settings)
    rows = []
    for entry in sorted(data["entries"].values(), key=lambda e: e.get("created_at") or ""):
        rows.append({k: entry.get(k) for k in ("name", "path", "status", "base", "commit", "created_at",
                                               "ready_at", "adw_id", "reason")}
                    | {"alive": liveness.holder_alive(entry)})
    return {"size": data.get("size", 0), "ready": sum(r["status"] == "ready" for r in rows), "entries": rows}


# ---------------------------------------------------------------------------------------------
# Taking


def take(settings: Settings, adw_id: str, branch: str, base: str, base_commit: str, resuming: bool,
         undo) -> Taken | None:
    """Turn a ready entry into ``trees/<adw_id>`` on ``branch`` at ``base_commit``; None when there is none.

    ``resuming``: the agent has a state already; finish a take that a crashed run of it began, if any.
    ``undo`` (the chain's) learns what this run created, so a later failure rolls it back.
    """
    if not registry_path(settings).exists():
        return None
    target = settings.worktree_path(adw_id)
    entry = _resume(settings, adw_id) if resuming else _claim(settings, adw_id, base, base_commit, target)
    if entry is None:
        return None
    fault("pool", "after", "claim")
    source = Path(entry["path"])
    untouched = False
    if not resuming:
        # A pooled worktree is nobody's until taken, but somebody may have worked in it anyway:
        # such an entry is kept (as drain keeps it), never handed to an agent or checked out over.
        reason, status = _proof(settings, entry)
        untouched = _is_the_base_as_it_is(settings, entry, source, base_commit, status)
        if reason:
            _set(settings, entry["name"], status="kept", pid=None, adw_id=None, reason=reason)
            return None
    try:
        with worktree.repo_lock(settings):
            if source.exists() and not target.exists():
                try:
                    git.git(settings.repo, "worktree", "move", source, target, timeout=settings.git_timeout)
                except GroveError as exc:  # e.g. a worktree with submodules: keep it out of takes
                    _set(settings, entry["name"], status="kept", pid=None, adw_id=None, reason=exc.message)
                    return None
            if not resuming:
                undo.worktree = True
            fault("pool", "after", "move")
            salvaged = None
            if not (resuming and git.ok(target, "symbolic-ref", "-q", "HEAD")):
                if resuming:
                    salvaged = _save_work_done_since(settings, adw_id, entry, target, base_commit)
                # Recorded before it exists: only a branch in the journal is ever Grove's to delete.
                owned.record(settings, "branch", branch, adw_id=adw_id, base_commit=base_commit)
                _switch(settings, target, branch, base_commit, reset=not untouched)
                if not resuming:
                    undo.branch, undo.base_commit = branch, base_commit
        fault("pool", "after", "branch")
    finally:
        if target.exists():  # the worktree is the agent's now: its rollback or re-run takes it from here
            _update(settings, lambda data: data["entries"].pop(entry["name"], None))
    taken = _refresh(settings, entry, target, base_commit, untouched)
    if salvaged:
        taken.detail += f"; what was changed in it since the killed run is saved in {salvaged}"
    return taken


def _save_work_done_since(settings: Settings, adw_id: str, entry: dict, target: Path, base_commit: str) -> str | None:
    """Before a re-run finishes a take a killed run began, keep what was done in the worktree since:
    the switch's `reset --hard` overwrites and deletes files. Returns the salvage ref, if one was made.

    Commits made on the detached HEAD the kill left would be orphaned by the switch's new HEAD, and
    an edit to a file the fill hid holds the agent's env (never put in a git object): both refuse,
    changing nothing. Everything else that differs from HEAD (edits, staged and new files, files a
    killed checkout left part-way) goes to refs/grove-salvage/ first, as a teardown's salvage does:
    no rule about what is nobody's work can be trusted to be right for every file. The fill's own
    files, as it left them, stay out of it.
    """
    head = git.rev(target, "HEAD")
    if head not in (entry.get("commit"), base_commit):
        _refuse_half_taken(adw_id, target, f"committed in since (HEAD at {str(head)[:10]})")
    preserve.require_checkout(target)
    listed = git.git(target, "ls-files", "-v", "-z").split("\0")
    written = _fills_record(entry)
    edited_hidden = [e[2:] for e in listed if e[:2] == "S " and e[2:] in written
                     and not generated.unchanged(target / e[2:], written[e[2:]])]
    if edited_hidden:
        _refuse_half_taken(adw_id, target, f"its hidden env files edited since ({', '.join(edited_hidden[:5])})")
    fills = _still_the_fills(target, entry, [*(entry.get("own") or {}), *(entry.get("own_tracked") or {})])
    ref, nested = preserve.salvage(settings.repo, adw_id, target, (*worktree.generated_files(settings), *sorted(fills)))
    if nested:
        _refuse_half_taken(adw_id, target, f"given a repository of its own since ({', '.join(nested[:5])})")
    return ref


def _refuse_half_taken(adw_id: str, target: Path, what: str) -> NoReturn:
    raise GroveError(f"a killed setup of {adw_id} left {target} half-taken from the pool, and it has "
                     f"been {what}; nothing was changed",
                     hint=f"keep that work on a branch of your own (`git -C {target} switch -c <name>`), or "
                          f"`inv teardown --adw-id {adw_id} --force`: it saves commits and edits under "
                          "refs/grove-backup/ and refs/grove-salvage/ first")


def _is_the_base_as_it_is(settings: Settings, entry: dict, path: Path, base_commit: str, status: str | None) -> bool:
    """Whether the entry's tracked files already are ``base_commit``'s and hidden as the take would
    hide them, so the switch's unhide and reset would write nothing (issue 24: two git processes
    less on every take at the newest base). That is: filled at that commit; no tracked file the fill
    rewrote and hid (``hidden``: its content is the fill's, not the commit's); every config it hid
    as it was still there (status cannot see one deleted) and still one the take repoints (else
    its skip-worktree bit would hide the agent's edits to it); and a proof that read a status with
    nothing but untracked files in it."""
    as_is = entry.get("hidden_as_is") or {}
    return (status is not None and entry.get("commit") == base_commit and entry.get("hidden") == []
            and all(rel in settings.path_configs and (path / rel).is_file() for rel in as_is)
            and all(e[:3] == "?? " for e in status.split("\0") if e))


def _switch(settings: Settings, target: Path, branch: str, base_commit: str, reset: bool = True) -> None:
    """Bring the taken worktree to ``base_commit`` on a new ``branch``, crash-safe.

    A plain `git checkout -b` killed while writing files leaves git's index.lock, HEAD detached
    and half the base's files on disk: every re-run then failed. So the files are written through
    ``worktree.reset_privately`` (only the files the base changed), then the branch is made and HEAD
    set. What is on disk is the pool's checkout (proven empty at the claim) plus what a killed run
    wrote, so ``reset --hard`` loses no one's work. The files the fill hid (skip-worktree) are
    unhidden in the private index first, so a base that changed them goes through; the file steps
    write the agent's own after. ``reset=False``: the files already are the base's (the same commit,
    nothing changed or hidden), and the reset is skipped.
    """
    if reset:
        _reset_files(settings, target, base_commit)
    made = git.ok(settings.repo, "branch", "--no-track", "--", branch, base_commit)  # refuses one that exists
    tip = None if made else git.rev(settings.repo, f"refs/heads/{branch}")
    if not made and tip is None:
        git.git(settings.repo, "branch", "--no-track", "--", branch, base_commit)  # git's own error
    elif tip is not None and tip != base_commit:  # made by a killed run of this take, at the same base
        raise GroveError(f"branch {branch} exists at {tip[:10]}, not at the base {base_commit[:10]}",
                         hint=f"look at it; `inv teardown --adw-id` and set up again")
    git.point_head(target, f"refs/heads/{branch}")


def _reset_files(settings: Settings, target: Path, commit: str) -> None:
    """`reset --hard commit` through a private index, the files the fill hid unhidden in it first."""
    def unhide(env: dict[str, str]) -> None:
        listed = proc.run(["git", "-C", target, "ls-files", "-v", "-z"], env=env).stdout.split("\0")
        hidden = [e[2:] for e in listed if e[:2] == "S "]
        if hidden:
            proc.run(["git", "-C", target, "update-index", "--no-skip-worktree", "--", *hidden], env=env)

    worktree.reset_privately(settings, target, commit, prepare=unhide)


def _set(settings: Settings, name: str, **fields) -> None:
    _update(settings, lambda data: data["entries"].get(name, {}).update(fields))


def _claim(settings: Settings, adw_id: str, base: str, base_commit: str, target: Path) -> dict | None:
    if target.exists():
        return None  # let the chain report what is in the way

    def pick(data: dict) -> dict | None:
        ready = [e for e in data["entries"].values()
                 if e["status"] == "ready" and e.get("base") == base and Path(e["path"]).is_dir()]
        if not ready:
            return None
        # One already at the newest base needs no checkout; else the newest.
        ready.sort(key=lambda e: (e.get("commit") == base_commit, e.get("ready_at") or ""), reverse=True)
        ready[0].update(status="taking", adw_id=adw_id, taken_at=state.now(), **liveness.stamp())
        return dict(ready[0])

    announce("pool:claim")  # test-only (issue 25): see core/faults.py
    with _lock(settings):
        data = read(settings)
        entry = pick(data)
        hold("pool:claim", entry["name"] if entry else "")
        if entry is not None:
            _write(settings, data)
        return entry


def forget_take(settings: Settings, adw_id: str) -> list[str]:
    """Drop the records of takes a dead run of ``adw_id`` left half-done whose worktree has moved
    out of the pool: called by teardown, under the agent's op lock (so no live run of it takes),
    once the agent's worktree is gone. The worktree was the agent's, and went with it (salvaged);
    the record would otherwise call a later agent of the same id's worktree an interrupted take,
    which no one can fix. An entry still in the pool is left to doctor (proven clean, back to ready).
    Returns the names dropped."""
    if not registry_path(settings).exists():
        return []

    def drop(data: dict) -> list[str]:
        gone = [name for name, e in data["entries"].items()
                if e["status"] == "taking" and e.get("adw_id") == adw_id and not Path(e["path"]).exists()]
        for name in gone:
            data["entries"].pop(name)
        return gone

    try:
        if not any(e["status"] == "taking" and e.get("adw_id") == adw_id for e in read(settings)["entries"].values()):
            return []  # the common case: no write
        return _update(settings, drop)
    except GroveError:
        return []  # an unreadable pool registry is doctor's to report; it must not stop a teardown midway


def _resume(settings: Settings, adw_id: str) -> dict | None:
    """An entry a dead run of this agent was taking. Its op lock is ours, so that run is over."""
    entry = next((e for e in read(settings)["entries"].values()
                  if e["status"] == "taking" and e.get("adw_id") == adw_id), None)
    if entry is None:
        return None
    target = settings.worktree_path(adw_id)
    if not Path(entry["path"]).exists() and git.worktree_for(settings.repo, target) is None:
        return None
    _set(settings, entry["name"], **liveness.stamp())
    return entry


def _refresh(settings: Settings, entry: dict, target: Path, base_commit: str, untouched: bool = False) -> Taken:
    """Drop the pool's env files and decide what must run again for the newest base. ``untouched``:
    the tracked files are the fill's commit's (_is_the_base_as_it_is), so of the env files the fill
    wrote, the tracked ones are those it hid: git need not be asked."""
    env_copies = [n for n in (envfiles.PORTS_FILE, *settings.env_files) if (target / n).is_file()]
    if untouched and set(env_copies) <= set(entry.get("own_written") or {}):
        tracked = set(entry["hidden"])
    else:
        tracked = set(git.git(target, "ls-files", "-z", "--", *env_copies).split("\0")) if env_copies else set()
    for name in env_copies:
        if name not in tracked:  # the pool's copy, with placeholder ports: the env step writes it fresh
            (target / name).unlink()
    included = _refresh_included(settings, target, entry)
    old = entry.get("commit") or base_commit
    # What the reset reads counts among its inputs, included files too (issue 20, item 8).
    changed = _changed(target, old, base_commit) | set(included)
    reasons = {}
    # At the commit it was filled at, the projects detected then are the projects now (a take is on
    # every pooled setup's clock, issue 24): detection lists the tracked tree again only after a move.
    same = old == base_commit and settings.detect_installs and entry.get("installs_detected") and "installed" in entry
    dirs = tuple(entry["installed"]) if same else deps.install_dirs(settings, target)
    for d in dirs:
        if d not in entry.get("installed", dirs):
            reasons[d] = "not an install dir when the pool was filled"
        elif _lock_changed(d, changed):
            reasons[d] = "lock file changed"
            venv = target / d / ".venv"
            if _lock_changed(d, changed, INTERPRETER_FILES) and venv.is_dir() and not venv.is_symlink():
                shutil.rmtree(venv)  # the pool's own venv: `uv sync` makes it anew with the interpreter asked for
        elif _stale_venv(target / d, entry):
            reasons[d] = "venv named the pool path"
        elif _lock_changed(d, set(entry.get("own_tracked") or {})):
            # The fill's install rewrote a tracked lock file, and the take's checkout put the base's
            # back: installed again, the agent's worktree is what a plain setup gives (issue 20, item 9).
            reasons[d] = "the fill's install rewrote its lock file"
    reinstall = list(reasons)
    db_again, why = db_inputs_changed(settings, entry, changed)
    moved = "at the base" if old == base_commit else f"{old[:10]} -> {base_commit[:10]}, {len(changed)} file(s)"
    detail = (f"pool entry {entry['name']} ({moved}); reinstall: "
              f"{', '.join(f'{d} ({r})' for d, r in reasons.items()) or 'none'}; db: {why}")
    return Taken(entry["name"], old, tuple(reinstall), db_again, why, detail,
                 _hiding_still_true(settings, entry) if untouched else None)


def _hiding_still_true(settings: Settings, entry: dict) -> tuple[frozenset[str], list[str]] | None:
    """The fill's hiding of the files a take writes, when it still holds: the take's switch left the
    skip-worktree bits as they were (nothing to restore), and the ignore rules that decided which
    untracked files needed a line in info/exclude have not changed (their files' sizes and mtimes)."""
    hid = entry.get("hid")
    if not hid or hid.get("key") != worktree.ignore_key(settings):
        return None
    return frozenset(hid["paths"]), list(hid["visible"])


def _changed(target: Path, old: str, new: str) -> set[str]:
    if old == new:
        return set()
    out = git.git(target, "diff", "--name-only", "-z", "--no-renames", old, new, "--")
    return set(filter(None, out.split("\0")))


# What uv reads to choose the interpreter: a venv that exists is kept by `uv sync` when one of these
# changed in a parent directory (measured, uv 0.13), where a fresh setup gets the new interpreter.
INTERPRETER_FILES = (".python-version", ".python-versions", "uv.toml")


def _lock_changed(install_dir: str, changed: set[str], names: tuple[str, ...] = LOCK_FILES) -> bool:
    """A lock file changed in the install dir or in any directory above it: uv reads .python-version
    and uv.toml from every parent, and a workspace's uv.lock or bun.lock lies at its root."""
    parts = [p for p in Path(install_dir).parts if p not in (".", "")]
    prefixes = ["/".join(parts[:i]) + "/" if i else "" for i in range(len(parts) + 1)]
    return any(f"{prefix}{name}" in changed for prefix in prefixes for name in names)


def db_inputs_changed(settings: Settings, entry: dict, changed: set[str]) -> tuple[bool, str]:
    """Whether a pooled database must be reset again, and why (docs: README "Warm pool").

    Its inputs: the main checkout's env files (their digest), and the base's files under
    ADW_DB_INPUTS (empty: any file; the reset script always counts). ``always``: every take.
    """
    if entry.get("db") != "done":
        return True, "the pool did not reset it"
    if settings.db_inputs == ("always",):
        return True, "ADW_DB_INPUTS=always"
    if entry.get("db_reset", settings.db_reset) != settings.db_reset:
        return True, "ADW_DB_RESET changed"
    if entry.get("env_digest") != env_digest(settings):
        return True, "the env files changed"
    if settings.db_inputs:
        watched = (*settings.db_inputs, settings.db_reset)
        hits = [p for p in changed if any(p == w or p.startswith(w.rstrip("/") + "/") for w in watched if w)]
    else:
        hits = sorted(changed)
    if hits:
        return True, f"inputs changed ({hits[0]}{' ...' if len(hits) > 1 else ''})"
    return False, "kept (inputs unchanged)"


def _stale_venv(directory: Path, entry: dict) -> bool:
    """A venv that still names the pool path must be installed again: not relocatable (uv made
    it itself), or a path or editable install (.pth, direct_url.json) pointing at the old place."""
    venv = directory / ".venv"
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file():
        return False
    if "relocatable = true" not in cfg.read_text(encoding="utf-8", errors="replace"):
        shutil.rmtree(venv)  # Grove's own install from the pool; `uv sync` makes it again from the cache
        return True
    old = entry["path"]
    for site in venv.glob("lib/python*/site-packages"):
        for marker in (*site.glob("*.pth"), *site.glob("*.dist-info/direct_url.json")):
            try:
                if old in marker.read_text(encoding="utf-8", errors="replace"):
                    return True
            except OSError:
                continue
    return False


def _refresh_included(settings: Settings, target: Path, entry: dict) -> list[str]:
    """Files copied by .worktreeinclude at fill time whose main-checkout copy changed since the fill
    (or is gone) are removed, for the include step to copy afresh; returns them (the db is reset
    again over them). Compared with the main checkout as it was at the fill, never with the pool's
    copy: the fill's reset may have changed that copy (migrated, anonymised), and taking that for a
    change handed the agent the raw copy without a reset (issue 20, item 8)."""
    from ..resources import include

    if not (settings.repo / include.INCLUDE_FILE).is_file():
        return []
    now = included_state(settings)
    recorded = entry.get("included")
    if recorded is None:  # filled by an older Grove: anything that differs counts, and the db is reset
        recorded = generated.fingerprints(target, now)
    changed = sorted(rel for rel in now.keys() | recorded.keys() if now.get(rel) != recorded.get(rel))
    for rel in changed:
        dst = target / rel
        if dst.is_file() or dst.is_symlink():
            dst.unlink()
    return changed


# ---------------------------------------------------------------------------------------------
# Refresh: entries follow the base (issue 24)


def refresh(settings: Settings, base: str, commit: str, report: Reporter) -> dict:
    """Bring every ready entry on ``base`` made at an older commit to ``commit``, in the pool and not
    in an agent's setup: the files the base changed, installs where a lock file changed, the
    database where its inputs changed. An entry being refreshed is ``refreshing``, which no take
    picks; one someone worked in is kept and never refreshed over. Returns refreshed/kept/failed."""
    def claim(data: dict) -> list[str]:
        stale = [e for e in data["entries"].values()
                 if e["status"] == "ready" and e.get("base") == base and e.get("commit") != commit]
        for e in stale:
            e.update(status="refreshing", refresh_to=commit, **liveness.stamp())  # pid and start time: alive
        return [e["name"] for e in stale]

    names = _update(settings, claim)
    refreshed, kept, failed = [], [], []
    for name, outcome in zip(names, proc.in_parallel([lambda n=n: _refresh_entry(settings, n, report) for n in names])):
        if isinstance(outcome, BaseException):
            failed.append({"name": name, "error": str(getattr(outcome, "message", outcome))})
        elif outcome:
            kept.append({"name": name, "reason": outcome})
        else:
            refreshed.append(name)
    return {"refreshed": refreshed, "kept": kept, "failed": failed}


def _refresh_entry(settings: Settings, name: str, report: Reporter, *, resumed: bool = False) -> str | None:
    """One claimed (``refreshing``) entry to its ``refresh_to``; returns why it was kept, else None.

    ``resumed``: a refresh a killed process left midway. Its files are part-way between the two
    commits, which is nobody's work as long as every path holds one of the two versions.
    """
    entry = read(settings)["entries"][name]
    path, old, new = Path(entry["path"]), entry["commit"], entry["refresh_to"]
    reason = _between(path, old, new, entry) if resumed else proven_empty(settings, entry)
    if reason:
        _set(settings, name, status="kept", pid=None, reason=reason)
        return reason
    try:
        changed = _changed(path, old, new)
        fault("pool", "before", "refresh")
        _reset_files(settings, path, new)
        fault("pool", "after", "refresh")
        values, digest = placeholder_values(settings, name), env_digest(settings)
        written = _write_files(settings, path, values)
        dirs = deps.install_dirs(settings, path)  # ADW_INSTALL_DIRS, or the projects detected at the new base
        again = [d for d in dirs if d not in entry.get("installed", ()) or _lock_changed(d, changed)]
        for d in again:
            venv = path / d / ".venv"
            if _lock_changed(d, changed, INTERPRETER_FILES) and venv.is_dir() and not venv.is_symlink():
                shutil.rmtree(venv)  # the pool's own venv: made anew with the interpreter asked for
        if again:
            deps.install_worktree(settings, path, only=tuple(again))
        db, reset = entry.get("db"), not agentdb.configured(settings) and db_inputs_changed(settings, entry, changed)[0]
        mine = {rel: fp for rel, fp in (entry.get("own_ignored") or {}).items() if generated.unchanged(path / rel, fp)}
        if reset:
            db = db_resource.reset_db(settings, path, values)[0]
            # Only what the fill or this reset wrote is the pool's own, never an ignored file
            # someone else left in the entry (issue 20): the reset records what it wrote, as it is now.
            mine.update({rel: fp for rel, fp in generated.recorded(path).items() if generated.unchanged(path / rel, fp)})
    except BaseException:
        # Left `refreshing` with no live holder: doctor --fix (or the next `grove pool`) resumes it.
        _set(settings, name, pid=None)
        raise
    own, own_tracked = _own_files(path), _own_tracked(path)  # what this refresh's installs rewrote is its own too
    written = _as_left(path, written)
    _set(settings, name, status="ready", pid=None, commit=new, refresh_to=None, refreshed_at=state.now(), db=db,
         env_digest=digest, own=own, own_tracked=own_tracked, own_ignored=mine, installed=list(dirs),
         installs_detected=settings.detect_installs, db_reset=settings.db_reset, **written)
    report.say(f"✓ pool      {name} refreshed {old[:10]} -> {new[:10]}"
               + (f"; reinstalled {', '.join(again)}" if again else "") + ("; db reset" if reset else ""))
    return None


def _between(path: Path, old: str, new: str, entry: dict) -> str | None:
    """None when every path of ``path`` holds ``old``'s or ``new``'s version (a killed refresh's
    half-written checkout), the fill's own untracked files aside; else why it must be kept."""
    if not path.is_dir() or git.ok(path, "symbolic-ref", "-q", "HEAD"):
        return f"{path} is gone or on a branch"
    if git.rev(path, "HEAD") not in (old, new):
        return f"{path} is at {str(git.rev(path, 'HEAD'))[:10]}: someone committed there"
    own = entry.get("own") or {}

    def dirty(rev: str) -> set[str]:
        raw = worktree.status_against(path, rev, index=git.own_admin_dir(path) / "index")
        return {e[3:] for e in raw.split("\0") if len(e) > 3
                and not (e[:2] == "??" and generated.unchanged(path / e[3:], own.get(e[3:])))}

    work = dirty(old) & dirty(new)
    return f"{path} has changes: {', '.join(sorted(work)[:5])}" if work else None


def follow(settings: Settings, size: int, base: str | None, report: Reporter, *, interval: float, rounds: int,
           fetch: bool = True) -> dict:
    """`grove pool --follow`: fill and refresh, then wait ``interval`` seconds, again and again, for
    machines without cron. Ctrl-C or SIGTERM stops it between or during rounds (what a round was
    doing is left as a crash would leave it, which the next round repairs); ``rounds`` > 0 stops it
    after that many. Returns the last round's result with ``rounds`` done."""
    import time

    done, last = 0, {}
    with proc.sigterm_interrupts():
        try:
            while not rounds or done < rounds:
                if done:
                    time.sleep(interval)
                last = fill(settings, size, base, report, fetch=fetch)
                done += 1
        except KeyboardInterrupt:
            report.say(f"pool --follow stopped after {done} round(s)")
    return {**last, "rounds": done} if last else {"rounds": done, **show(settings)}


# ---------------------------------------------------------------------------------------------
# Refill


def behind(settings: Settings, data: dict, commit: str | None) -> bool:
    """The pool is below its size, or holds ready entries on the base made at another commit."""
    entries = data["entries"].values()
    usable = sum(e["status"] in ("ready", "filling", "refreshing") for e in entries)
    stale = commit is not None and any(e["status"] == "ready" and e.get("base") == settings.base_branch
                                       and e.get("commit") != commit for e in entries)
    return bool(data.get("size")) and (usable < data["size"] or stale)


def refill_in_background(settings: Settings, invoke_config: dict | None = None,
                         base_commit: str | None = None) -> int | None:
    """Start `grove pool --size <recorded size>` detached when the pool is behind (below its size, or,
    given the base's newest ``base_commit``, with entries at an older one); its pid, else None.

    The child gets the same configuration: flags travel as ADW_* (which beat Invoke's config
    there as here) and Invoke's layer as INVOKE_GROVE_*. Output goes to agents/.grove/pool-refill.log.
    """
    import subprocess
    import sys

    if not registry_path(settings).exists():
        return None
    data = read(settings)
    if not behind(settings, data, base_commit):
        return None
    env = dict(os.environ, ADW_REPO=str(settings.repo), ADW_TREES_DIR=settings.trees_dir,
               ADW_AGENTS_DIR=settings.agents_dir, ADW_BASE_BRANCH=settings.base_branch)
    env.update({f"INVOKE_GROVE_{k.upper()}": str(v) for k, v in (invoke_config or {}).items() if v is not None})
    lib = str(Path(__file__).resolve().parents[2])  # the folder holding the grove package (lib/grove/ops/pool.py)
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    settings.grove_path.mkdir(parents=True, exist_ok=True)
    with open(settings.grove_path / "pool-refill.log", "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "grove", "pool", "--size", str(data["size"]), "--quiet"],
                                 cwd=settings.repo, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    return child.pid
