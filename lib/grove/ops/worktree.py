"""The git steps of the chain: fetch the base, add the worktree, keep generated files out of git.

Every mutation of refs, config or the worktree list runs under one short repo-wide lock
(DESIGN.md pitfalls: parallel `worktree add` fails on .git/config; parallel fetch fails on
refs and on half-created worktrees). Checkouts, installs and env work run outside it.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..resources import submodules
from ..core import git, locks, proc
from ..safety import archive, owned, preserve
from ..core.config import Settings
from ..core.errors import BAD_INPUT, GroveError, bad_input


@contextmanager
def repo_lock(settings: Settings) -> Iterator[None]:
    with locks.locked(settings.lock_path("repo"), settings.lock_timeout, "another Grove process holds the repo lock"):
        yield


def _fetch_stamp(settings: Settings, base: str) -> Path:
    # One stamp per remote branch; '/' cannot appear in a file name, '%' cannot appear in a ref.
    return settings.grove_path / f"fetch-{settings.remote}-{base.replace('%', '%25').replace('/', '%2F')}.stamp"


def check_base(settings: Settings, base: str, fetch: bool, known: dict[str, str] | None = None) -> None:
    """Refuse a base branch that exists nowhere, before any lock or file is created (exit 2).

    ``known``: the refs validation already looked up in one batch (git.refs), if any.
    """
    remote = settings.remote
    local, tracking = f"refs/heads/{base}", f"refs/remotes/{remote}/{base}"
    if known is None:
        known = git.refs(settings.repo, [local, tracking])
    if local in known or tracking in known:
        return
    if fetch and remote and git.has_remote(settings.repo, remote):
        probe = proc.run(["git", "-C", settings.repo, "ls-remote", "--exit-code", "--heads", remote, base],
                         check=False, timeout=settings.git_timeout)
        if probe.returncode == 0:
            return
    raise bad_input(f"base branch {base!r} does not exist locally or on {remote or 'any remote'}",
                    "pass --base NAME or set ADW_BASE_BRANCH")


def resolve_base(settings: Settings, base: str, fetch: bool, report) -> tuple[str, str]:
    """Fetch ``base`` when a remote exists and resolve it to a commit: (sha, where it came from).

    Offline, or a fetch that fails, falls back to the local base (said as a warning).
    """
    remote, tracking = settings.remote, f"refs/remotes/{settings.remote}/{base}"
    if fetch and remote and git.has_remote(settings.repo, remote):
        try:
            fetched = fetch_base(settings, base) or git.rev(settings.repo, tracking)
            if fetched is None:  # the fetch has just written it: only a concurrent prune removes it
                raise GroveError(f"{tracking} is missing right after the fetch")
            return fetched, f"{remote}/{base}"
        except GroveError as exc:
            # Offline, or a base that only exists here (not pushed yet): the local one is the base.
            if exc.code == BAD_INPUT and not git.rev(settings.repo, f"refs/heads/{base}"):
                raise
            report.warn(f"{exc.message}; using the local {base}")
    local = git.rev(settings.repo, f"refs/heads/{base}")
    if local:
        return local, base
    known = git.rev(settings.repo, tracking)
    if known:
        return known, f"{remote}/{base} (last fetched)"
    raise bad_input(f"base branch {base!r} does not exist locally or on {remote or 'any remote'}",
                    "pass --base NAME or set ADW_BASE_BRANCH")


def fetch_base(settings: Settings, base: str) -> str | None:
    """Fetch ``base`` into refs/remotes/<remote>/<base> under the repo lock: the one fetch Grove does.

    Coalescing: a fetch that started after we asked for the lock is as fresh as ours would be,
    so 30 agents starting together cost one or two fetches, not 30 in a row. A remote on this
    machine (a path or file:// URL) whose branch is already where ours is needs no fetch at all:
    its ref is read from its files (git.local_remote_ref).
    Returns the fetched commit when known without asking git again (the stamp keeps it, FETCH_HEAD
    names it), else None. Raises bad input when the remote has no such branch, a failure (exit 1)
    when the fetch fails.
    """
    tracking = f"refs/remotes/{settings.remote}/{base}"
    there = git.local_remote_ref(settings.repo, settings.remote, f"refs/heads/{base}")
    if there is not None and git.refs(settings.repo, [tracking]).get(tracking) == there:
        return there  # a remote on this machine whose branch is where ours is: nothing to fetch
    asked = time.time()
    stamp = _fetch_stamp(settings, base)
    refspec = f"+refs/heads/{base}:{tracking}"
    sha: str | None  # the fetched commit: from the stamp, or from FETCH_HEAD after our own fetch
    with repo_lock(settings):
        try:
            when, _, sha = stamp.read_text().strip().partition(" ")
            if float(when) >= asked:
                return sha or None
        except (OSError, ValueError):
            pass
        started = time.time()
        # No auto-maintenance: it is one process more on every setup's clock (issue 24), run under
        # the repo lock that 30 starting agents queue on; the user's own git and the agents'
        # commits keep running it.
        out = proc.run(["git", "-C", settings.repo, "fetch", "--no-tags", "--quiet", "--no-auto-maintenance",
                        settings.remote, refspec], check=False, timeout=settings.git_timeout)
        if out.returncode == 0:
            sha = _fetched_commit(settings, base)
            locks.atomic_write_text(stamp, f"{started} {sha or ''}\n", durable=False)
            return sha
    if "couldn't find remote ref" in out.stderr:
        raise bad_input(f"base branch {base!r} does not exist on {settings.remote}",
                        "pass --base NAME or set ADW_BASE_BRANCH")
    raise GroveError(f"fetch from {settings.remote} failed ({proc.tail(out.stderr, 1)})")


def _fetched_commit(settings: Settings, base: str) -> str | None:
    """The commit the fetch just wrote, from FETCH_HEAD (documented in git-fetch(1)); None when
    FETCH_HEAD does not name exactly this branch (then the caller asks git)."""
    try:
        line = (settings.repo / ".git" / "FETCH_HEAD").read_text().split("\n", 1)[0]
    except OSError:
        return None
    sha, _, rest = line.partition("\t")
    if len(sha) in (40, 64) and rest.partition("\t")[2].startswith(f"branch '{base}' of "):
        return sha
    return None


def add(settings: Settings, adw_id: str, branch: str, base_commit: str, new_branch: bool | None = None,
        checkout: bool = True) -> bool:
    """Create the worktree on ``branch``; True when this call created the branch.

    ``--no-track`` keeps git from writing upstream config (the config.lock race); ``--no-checkout``
    keeps the file checkout out of the lock, it happens right after in the worktree alone (or, with
    ``checkout=False``, when the caller calls ``checkout``).
    ``new_branch``: validation already found the branch absent (a race that made it since makes
    ``worktree add -b`` fail, as it should); None asks git.
    """
    path = settings.worktree_path(adw_id)
    settings.trees_path.mkdir(parents=True, exist_ok=True)
    with repo_lock(settings):
        created = new_branch if new_branch is not None else not git.branch_exists(settings.repo, branch)
        if created:
            # Recorded before it exists: only a branch in the journal is ever Grove's to delete.
            owned.record(settings, "branch", branch, adw_id=adw_id, base_commit=base_commit)
            args: list[str | Path] = ["worktree", "add", "--quiet", "--no-checkout", "--no-track", "-b", branch, path,
                                      base_commit]
        else:
            args = ["worktree", "add", "--quiet", "--no-checkout", path, branch]
        try:
            git.git(settings.repo, *args, timeout=settings.git_timeout)
        except GroveError:
            if created and new_branch is not None:
                # The branch may be someone else's, made since validation: it must not stay in the
                # journal as Grove's (an unrecorded branch is kept, the safe direction).
                owned.forget(settings, "branch", branch)
            raise
    if checkout:
        checkout_new(settings, path)
    return created


def checkout_new(settings: Settings, path: Path) -> None:
    """Check out the files of a worktree that ``add`` made with ``--no-checkout`` (it has no index yet)."""
    reset_privately(settings, path)


def reset_privately(settings: Settings, path: Path, commit: str | None = None,
                    prepare: Callable[[dict[str, str]], None] | None = None) -> None:
    """`git reset --hard [commit]` in the worktree at ``path``, through a private copy of its index
    that replaces the real one once complete.

    A kill -9 midway (setup_many runs several checkouts at once) must not leave git's own
    index.lock, which makes every later checkout there fail until a human deletes it. Grove's
    private files are its own, written only here under the agent's op lock (or the pool's or merge
    lock), so a re-run removes what a killed one left and starts again from the real index, which
    is untouched until then. Starting from a copy of it, only the files that differ are written.
    ``prepare(env)`` may change the copy first (the pool unhides the files its fill hid).
    """
    admin = git.own_admin_dir(path)
    private = admin / "grove-checkout.index"
    for leftover in (private, admin / "grove-checkout.index.lock"):
        leftover.unlink(missing_ok=True)
    if (admin / "index").is_file():
        shutil.copyfile(admin / "index", private)
    # submodule.recurse=false: a user's `true` makes reset recurse into submodules the submodules
    # step has not set up yet, and git fails; that step checks them out itself, right after.
    env = {"GIT_INDEX_FILE": str(private), **_config_env("submodule.recurse", "false")}
    if prepare is not None:
        prepare(env)
    proc.run(["git", "-C", path, "reset", "--hard", "--quiet", *([commit] if commit else [])], env=env,
             timeout=settings.git_timeout, what="git reset")
    os.replace(private, admin / "index")


def _config_env(key: str, value: str) -> dict[str, str]:
    """``git -c key=value`` as environment (GIT_CONFIG_COUNT, git 2.31+), after any pairs the user's
    environment already gives."""
    raw = os.environ.get("GIT_CONFIG_COUNT", "")
    n = int(raw) if raw.isdigit() else 0
    return {"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": key, f"GIT_CONFIG_VALUE_{n}": value}


def status_against(path: Path, rev: str, untracked: str = "all", index: Path | None = None) -> str:
    """``path``'s files against ``rev`` in `git status --porcelain -z`'s form (" M a", " D b", "?? c"),
    through a scratch index: files on disk are compared, never touched, and neither the worktree's
    own index nor a lock a killed git left on it is used (for a worktree with no index). Plumbing, not
    `git status`, which also compares with HEAD: a HEAD a killed `git worktree add` left null fails it.
    ``index``: the worktree's own, when it has one: the scratch index starts as a copy, so a file
    unchanged since git last wrote it is not hashed again (a file committed with CRLF that its
    attributes now normalise would otherwise differ from every commit). ``untracked``: "all" or "no"."""
    import tempfile

    fd, scratch = tempfile.mkstemp(prefix="grove-compare-index-", dir=git.own_admin_dir(path))
    os.close(fd)
    os.unlink(scratch)  # read-tree makes it (an empty file is not an index)
    try:
        env = {"GIT_INDEX_FILE": scratch}
        if index is not None and index.is_file():
            shutil.copyfile(index, scratch)  # `read-tree -m`: entries that match keep their stat info
        git_here = ["git", "-C", str(path)]
        # -i: compare, never check the files on disk (without it, an entry ``rev`` changes whose
        # file differs from the index fails the whole read: "not uptodate. Cannot merge").
        proc.run([*git_here, "read-tree", *(["-m", "-i"] if Path(scratch).exists() else []), rev], env=env,
                 what="git read-tree")
        proc.run([*git_here, "update-index", "-q", "--refresh"], env=env, check=False)  # stat info only
        fields = proc.run([*git_here, "diff-files", "--name-status", "-z"], env=env).stdout.split("\0")
        changed = [f" {kind} {name}" for kind, name in zip(fields[::2], fields[1::2])]
        others = proc.run([*git_here, "ls-files", "-z", "--others", "--exclude-standard"],
                          env=env).stdout.split("\0") if untracked == "all" else []
        return "".join(e + "\0" for e in changed + [f"?? {o}" for o in others if o])
    finally:
        Path(scratch).unlink(missing_ok=True)


def existing(settings: Settings, adw_id: str, branch: str) -> bool:
    """True when the worktree is already in place on ``branch``; an error when something else is there."""
    path = settings.worktree_path(adw_id)
    if not path.exists() and not git.registered(settings.repo, path):
        return False  # the common case, a new agent: no `git worktree list` needed
    entry = git.worktree_for(settings.repo, path)
    if entry is not None and is_stillborn(entry) and repair_stillborn(settings, path):
        entry = None  # a previous setup was killed inside `git worktree add`: start the add again
    if entry is None:
        if path.exists() and any(path.iterdir()):
            raise GroveError(f"{path} exists but git does not know it as a worktree",
                             hint="run `inv doctor` to see it, then move it aside or `inv doctor --fix`")
        return False
    if entry["branch"] != branch:
        raise GroveError(f"{path} is a worktree on {entry['branch'] or 'a detached HEAD'}, not {branch}",
                         hint="tear it down first (`inv teardown --adw-id ...`)")
    if not path.is_dir():
        raise GroveError(f"git knows the worktree {path} but its directory is gone",
                         hint="run `inv doctor --fix` to prune the stale entry")
    # A crash between `worktree add --no-checkout` and the checkout leaves no index: finish it.
    if not Path(git.git(path, "rev-parse", "--path-format=absolute", "--git-path", "index")).exists():
        _save_edits_before_checkout(settings, adw_id, path)
        checkout_new(settings, path)
    return True


def _save_edits_before_checkout(settings: Settings, adw_id: str, path: Path) -> None:
    """No index also means an agent's worktree whose index went missing later (a crashed tool, the
    classic `rm index` to get past "index file corrupt"): its edits are on disk, and the checkout's
    `reset --hard` would overwrite them. A file that differs from HEAD (not merely one the killed
    checkout had not written yet) is salvaged under refs/grove-salvage/ first (trust first)."""
    raw = status_against(path, "HEAD", untracked="no")
    if any(len(e) > 3 and e[:2] != " D" for e in raw.split("\0")):
        preserve.salvage(settings.repo, adw_id, path, generated_files(settings))


def is_stillborn(entry: dict) -> bool:
    """A `git worktree add` killed midway: still locked "initializing" (git writes that first and
    removes it last), usually with a null HEAD that breaks `git rev-list --all` (issue 10, defect 11)."""
    return entry.get("locked") == "initializing"


def repair_stillborn(settings: Settings, path: Path) -> bool:
    """Remove a stillborn worktree Grove started: its admin entry and its directory, which must hold
    nothing but git's `.git` file. False (nothing touched) when that cannot be proven."""
    trees = os.path.realpath(settings.trees_path)
    real = os.path.realpath(path)
    if os.path.islink(path) or not real.startswith(trees + os.sep):
        return False
    with repo_lock(settings):
        entry = git.worktree_for(settings.repo, path)
        if entry is None or not is_stillborn(entry):
            return entry is None  # gone already, or a live add finished meanwhile
        if not _holds_only_git_file(real):
            return False
        admin = git.admin_dir(settings.repo, path)
        if admin is None:
            return False
        # The branch (if `add -b` got that far) stays; whatever its admin dir points at is kept reachable,
        # by the same mechanism as any other worktree removal.
        _keep_worktree_commits(settings, path, entry)
        _remove_stillborn(admin, real)
    return True


def repair_unlisted_stillborn(settings: Settings) -> list[str]:
    """Remove what a `git worktree add` killed before it wrote `commondir` left: an admin dir holding
    only its "initializing" lock, maybe `gitdir`, and `commondir` empty or absent. With an empty one
    git lists no worktree at all ("failed to read .git/worktrees/<id>/commondir"), so doctor could not
    even see it. Only when its worktree directory, if any, lies inside trees/ and holds nothing but
    git's `.git` file (it never got a commit checked out, so it holds no work). Returns the worktree
    paths (or admin dirs) removed."""
    root = git.common_dir(settings.repo) / "worktrees"
    trees = os.path.realpath(settings.trees_path)
    removed = []
    with repo_lock(settings):
        for admin in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                if _read_or_empty(admin / "commondir") or (admin / "locked").read_text().strip() != "initializing" \
                        or set(os.listdir(admin)) - {"locked", "gitdir", "commondir"}:
                    continue
                gitdir = _read_or_empty(admin / "gitdir")
            except OSError:
                continue
            real = os.path.realpath(os.path.dirname(gitdir)) if gitdir else ""
            if real and (not real.startswith(trees + os.sep) or os.path.islink(os.path.dirname(gitdir))
                         or not _holds_only_git_file(real)):
                continue
            _remove_stillborn(admin, real)
            removed.append(real or str(admin))
    return removed


def _holds_only_git_file(real: str) -> bool:
    """A stillborn worktree's directory holds git's `.git` file and nothing else (or is gone)."""
    return not (os.path.isdir(real) and set(os.listdir(real)) - {".git"})


def _remove_stillborn(admin: Path, real: str) -> None:
    """Its admin dir, then its directory (proven by the caller to hold only `.git`)."""
    shutil.rmtree(admin)
    if real and os.path.isdir(real):
        Path(real, ".git").unlink(missing_ok=True)
        os.rmdir(real)


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def hide(settings: Settings, worktree: Path, relpaths: list[str]) -> list[str]:
    """``hide_files``; returns the files left visible, for the caller to warn about."""
    return hide_files(settings, worktree, relpaths)[1]


def hide_files(settings: Settings, worktree: Path, relpaths: list[str]) -> tuple[list[str], list[str]]:
    """Keep files Grove wrote into a worktree out of `git add -A`, so no port or absolute path is committed.

    Tracked files get skip-worktree in the worktree's own index. A directory Grove created is left
    visible: it is empty, and what an agent writes there is its work (issue 20). An untracked file
    gets a line in the repo's info/exclude, but only when the main checkout has no such path:
    info/exclude applies to every checkout of the repository, and must not hide the user's own files there.
    Returns (the tracked files given skip-worktree, the files left visible: ignored nowhere and
    present in the main checkout).
    """
    if not relpaths:
        return [], []
    # One ls-files answers both questions: "H" tracked, "?" untracked and not ignored; an ignored
    # untracked file is not listed at all (was ls-files plus check-ignore, issue 12).
    listed = git.git(worktree, "ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard", "--directory",
                     "--", *relpaths).split("\0")
    tagged = [(item[0], item[2:].rstrip("/")) for item in listed if len(item) > 2]
    tracked = sorted({p for tag, p in tagged if tag != "?" and p in relpaths})
    if tracked:
        git.git(worktree, "update-index", "--skip-worktree", "--", *tracked)
    needed, visible = [], []
    for rel in (p for p in relpaths if ("?", p) in tagged and p not in tracked):
        if (worktree / rel).is_dir():
            # An empty directory Grove made for a repointed path: git sees nothing in it until an agent
            # writes there, and then it must see that work. It used to get a `.gitignore` of `*`,
            # which hid everything written there from `git add -A` and salvage (issue 20, item 1).
            continue
        elif os.path.lexists(settings.repo / rel):
            visible.append(rel)
        else:
            needed.append(f"/{rel}")
    if needed:
        _exclude(settings, needed)
    return tracked, visible


def exclude(settings: Settings, patterns: list[str]) -> None:
    """Add ``patterns`` to the repository's info/exclude (for every checkout of it), once each."""
    _exclude(settings, patterns)


def _exclude(settings: Settings, patterns: list[str]) -> None:
    exclude = git.common_dir(settings.repo) / "info" / "exclude"
    with repo_lock(settings):
        text = exclude.read_text() if exclude.exists() else ""
        lines = set(text.splitlines())
        new = [p for p in patterns if p not in lines]
        if new:
            head = "" if not text or text.endswith("\n") else "\n"
            marker = "" if "# grove: generated files" in lines else "# grove: generated files\n"
            locks.atomic_write_text(exclude, text + head + marker + "".join(f"{p}\n" for p in new))


def ignore_warnings(settings: Settings) -> list[str]:
    """Which of trees/, agents/ and .ports.env the repo's ignore rules miss.

    A clean answer is remembered in agents/.grove/ignore-ok with the size and mtime of every file
    that could change it, so the next setup asks git only when one of them changed (issue 12).
    """
    probes = {f"{settings.trees_dir}/x": f"{settings.trees_dir}/", f"{settings.agents_dir}/x": f"{settings.agents_dir}/",
              ".ports.env": ".ports.env"}
    stamp, key = settings.grove_path / "ignore-ok", _ignore_key(settings, probes)
    try:
        if stamp.read_text() == key:
            return []
    except OSError:
        pass
    out = proc.run(["git", "-C", settings.repo, "check-ignore", "--no-index", "--", *probes], check=False)
    ignored = set(out.stdout.split("\n"))
    missing = [name for probe, name in probes.items() if probe not in ignored]
    if not missing:
        try:
            locks.atomic_write_text(stamp, key, durable=False)
        except OSError:
            pass
    return missing


def ignore_key(settings: Settings) -> str:
    """The identity of every file git's ignore rules are read from, beside the worktree's own
    tracked .gitignore files: a hiding decided under one key holds while it is the same."""
    return _ignore_key(settings, {})


def _ignore_key(settings: Settings, probes: dict) -> str:
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files = [settings.repo / ".gitignore", settings.repo / ".git" / "info" / "exclude", settings.repo / ".git" / "config",
             home / ".gitconfig", xdg / "git" / "config", xdg / "git" / "ignore",
             *(settings.repo / d / ".gitignore" for d in (settings.trees_dir, settings.agents_dir))]
    parts = [" ".join(probes)]
    for f in files:
        try:
            st = f.stat()
            parts.append(f"{f} {st.st_size} {st.st_mtime_ns}")
        except OSError:
            parts.append(f"{f} -")
    parts.append(os.environ.get("GIT_CONFIG_GLOBAL", ""))
    return "\n".join(parts) + "\n"


def remove(settings: Settings, path: Path, *, salvage: bool, entry: dict | None = None, force: bool = False,
           values: dict[str, str] | None = None, reason: str = "teardown", proven_clean: bool = False,
           also_own: Callable[[str], bool] | None = None) -> dict:
    """Remove the worktree at ``path`` (git's entry for exactly it, then what is left on disk).

    The one removal path for every worktree Grove removes: agents (teardown, gc, merge --cleanup,
    doctor --fix, a setup's rollback) and pool entries (issue 20, item 5). The merge queue's
    integration worktree is kept between runs; nothing removes it but this function either.

    ``path`` must be a real directory inside trees/ (not a symlink), and git run there must read that
    worktree itself (its `.git` file intact), both checked before anything else. Ignored files worth
    keeping are listed and sized before anything changes: past ADW_ARCHIVE_LIMIT_MB the removal
    refuses unless ``force`` (lib/grove/safety/archive.py). Then processes still running inside it
    (a dev server, a watcher, a forgotten agent) are stopped, so they write nothing more and their
    ports are free (issue 15). Then what it holds is saved: with ``salvage``, uncommitted work goes
    to refs/grove-salvage/ (without it, git itself refuses a dirty worktree) and a repository nested
    inside it is moved to agents/.archive/; every commit only the worktree's own records reach (HEAD,
    its reflog, refs/worktree/, an unfinished merge) goes to refs/grove-backup/. Submodule commits
    the main checkout's copies have no ref for (and, with ``salvage``, their edits) go to
    refs/grove-backup/submodules/ (lib/grove/resources/submodules.py). Ignored files worth keeping
    are moved to agents/.archive/<id>/<utc>/files/ (``values``: what Grove wrote there, to tell its
    own unchanged files; default from the agent's state; ``also_own``: more files the caller knows
    it made and are unchanged, the pool's fill). A worktree whose `.git` is gone is refused, or
    with ``force`` all its files are archived (git cannot tell which are committed).
    ``proven_clean``: the caller proved it holds no one's uncommitted work (the pool), so git may
    remove it with the untracked files its fill made, without a salvage.
    Returns what was made: ``salvage_ref``, ``worktree_backup_refs``, ``moved_nested``,
    ``submodule_refs``, ``stopped_processes``, ``archive`` ({path, id, files, bytes, paths}).
    """
    require_inside_trees(settings, path)
    entry = entry or git.worktree_for(settings.repo, path)
    present = entry is not None and path.is_dir()
    broken = present and preserve.checkout_problem(path, git.admin_dir(settings.repo, path)) is not None
    if broken and not force:
        preserve.require_checkout(path, git.admin_dir(settings.repo, path))  # raises, naming the problem
    keep = _to_archive(settings, path, values, broken, also_own) if present else []
    archive.check_limit(settings, path, keep, force)
    saved: dict = {"salvage_ref": None, "worktree_backup_refs": [], "moved_nested": [], "submodule_refs": [],
                   "stopped_processes": stop_processes(settings, path), "archive": archive.empty()}
    if broken:
        return _remove_broken(settings, path, entry, saved, reason)
    force_git = salvage or proven_clean
    if entry is not None:
        if path.is_dir():
            # git removes a worktree with submodules only when forced, and forcing deletes their git
            # dirs with every commit made in them: those are kept first (issue 14).
            kept = submodules.save(settings, path, path.name, salvage)
            if kept is not None:
                saved["submodule_refs"], force_git = kept, True
        if path.is_dir() and salvage:
            saved["salvage_ref"], nested = preserve.salvage(settings.repo, path.name, path, generated_files(settings),
                                                            hidden_edits(settings, path))
            handled = submodules.paths(path)  # the worktree's submodules: saved just above, not moved
            saved["moved_nested"] = [str(_move_nested(settings, path, rel)) for rel in nested if rel not in handled]
        saved["worktree_backup_refs"] = _keep_worktree_commits(settings, path, entry)
    if present:
        # Listed again: a process stopped just now may have written more (issue 20, item 1).
        saved["archive"] = archive.keep(settings, path, _to_archive(settings, path, values, False, also_own),
                                        adw_id=path.name,
                                        branch=(entry or {}).get("branch"), reason=reason)
    with repo_lock(settings):
        if entry is not None and path.is_dir():
            git.git(settings.repo, "worktree", "remove", *(["--force"] if force_git else []), path,
                    timeout=settings.git_timeout)
        elif entry is not None:
            git.prune_entry(settings.repo, path)
    if path.exists() or os.path.islink(path):
        safe_rmtree(settings, path)
    return saved


def _to_archive(settings: Settings, path: Path, values: dict[str, str] | None, broken: bool,
                also_own: Callable[[str], bool] | None = None) -> list[str]:
    """The files of ``path`` to move to the archive before it is removed (issue 20, item 1)."""
    if broken:
        return archive.every_file(path, settings.regenerable_dirs)
    from ..resources import generated

    if values is None:
        values = agent_values(settings, path.name)
    own = generated.own_unchanged(settings, path, values, generated.recorded(path))
    ignored = archive.worth_keeping(path, settings.regenerable_dirs,
                                    own if also_own is None else lambda rel: also_own(rel) or own(rel))
    # A tracked env file Grove hid and the agent edited: salvage leaves Grove's env files out (they
    # hold secrets, never put in a git object), so the edit is kept here, with the ignored files.
    return sorted(set(ignored) | set(n for n in hidden_edits(settings, path) if n in generated_files(settings)))


def agent_values(settings: Settings, adw_id: str) -> dict[str, str] | None:
    """What the setup chain wrote into an agent's env files, from its state (None: no state or ports)."""
    from ..core import state
    from ..resources import generated

    s = state.load(settings, adw_id) if not adw_id.startswith(".") else None
    return generated.env_values(settings, adw_id, s["ports"]) if s and s.get("ports") else None


def _remove_broken(settings: Settings, path: Path, entry: dict | None, saved: dict, reason: str) -> dict:
    """A worktree whose `.git` file is gone (``--force``): git run there would read the main checkout,
    so nothing is salvaged with it (issue 20, item 13). Every file goes to the archive instead, the
    commits its admin dir records go to refs/grove-backup/, then the directory and the entry go."""
    assert entry is not None
    saved["worktree_backup_refs"] = _keep_worktree_commits(settings, path, entry)
    saved["archive"] = archive.keep(settings, path, archive.every_file(path, settings.regenerable_dirs),
                                    adw_id=path.name, branch=entry.get("branch"), reason=f"{reason} (no .git)")
    safe_rmtree(settings, path)
    with repo_lock(settings):
        git.prune_entry(settings.repo, path)
    return saved


def require_inside_trees(settings: Settings, path: Path) -> None:
    """Refuse (exit 1) a path that is a symlink or does not resolve to a directory inside trees/."""
    trees = os.path.realpath(settings.trees_path)
    if os.path.islink(path) or not os.path.realpath(path).startswith(trees + os.sep):
        raise GroveError(f"refusing to remove {path}: it is a symlink or lies outside {settings.trees_path}",
                         hint="Grove only removes worktrees it placed in its trees directory")


def hidden_edits(settings: Settings, path: Path) -> list[str]:
    """An agent's own edits to files Grove hid with skip-worktree (invisible to `git status`)."""
    from ..core import state
    from ..resources import hidden

    s = state.load(settings, path.name)
    return hidden.edited_hidden(settings, s, path) if s and path.is_dir() else []


def generated_files(settings: Settings) -> tuple[str, ...]:
    """Files the setup chain writes into a worktree that may hold ports or secrets."""
    from ..resources.envfiles import PORTS_FILE

    return (PORTS_FILE, *settings.env_files)


def _move_nested(settings: Settings, worktree: Path, rel: str) -> Path:
    """A repository inside the worktree (its own .git directory) keeps commits this repository does
    not have: git cannot salvage it, so it is moved aside whole, never deleted."""
    nested = worktree / rel
    if not (nested / ".git").is_dir():
        raise GroveError(f"{nested} has commits that exist only in its own repository (a submodule?)",
                         hint="push them or move the directory out, then tear down again")
    return quarantine(settings, f"{worktree.name}-nested", nested)


def _keep_worktree_commits(settings: Settings, path: Path, entry: dict) -> list[str]:
    admin = git.admin_dir(settings.repo, path)
    commits = preserve.worktree_commits(settings.repo, admin) if admin else [c for c in [entry["head"]] if c]
    real = os.path.realpath(path)
    others = [w["head"] for w in git.worktrees(settings.repo)
              if w["head"] and os.path.realpath(w["path"]) != real and not is_stillborn(w)]
    label = entry["branch"] or f"detached/{path.name}"
    return preserve.keep_unreachable(settings.repo, commits, other_heads=others, label=label,
                                     why=f"held only by the worktree {path}")


def delete_branch(settings: Settings, branch: str, base_ref: str) -> str | None:
    """Delete a Grove-owned branch; its tip is backed up first unless the base already contains it.

    Tree equivalence is not enough (an empty commit, a change and its revert): only ancestry is.
    """
    with repo_lock(settings):
        tip = git.rev(settings.repo, f"refs/heads/{branch}")
        if tip is None:
            return None
        backup = None
        if not git.ok(settings.repo, "merge-base", "--is-ancestor", tip, base_ref):
            backup = preserve.backup(settings.repo, branch, tip, f"before deleting {branch}")
        owned.forget(settings, "branch", branch)
        git.git(settings.repo, "branch", "-D", "--", branch)
        return backup


def quarantine(settings: Settings, name: str, path: Path) -> Path:
    """Move a directory out of trees/ into agents/.archive/: its files may be work in no commit.

    Used for what Grove cannot prove it made or cannot salvage into git; nothing is deleted.
    """
    trees = os.path.realpath(settings.trees_path)
    if os.path.islink(path) or not os.path.realpath(path).startswith(trees + os.sep):
        raise GroveError(f"refusing to move {path}: not a directory inside {settings.trees_path}")
    stem = f"{name}-dir-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    target, n = settings.archive_path / stem, 1
    while target.exists():
        n += 1
        target = settings.archive_path / f"{stem}-{n}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def stop_processes(settings: Settings, path: Path) -> list[dict]:
    """Stop what runs inside ``path``, which must provably lie inside trees/ (never trees/ itself)."""
    from ..core import portable

    if os.path.islink(path) or not path.is_dir():
        return []
    real, trees = Path(os.path.realpath(path)), settings.trees_path.resolve()
    if real == trees or not real.is_relative_to(trees):
        return []  # not ours to clean; safe_rmtree refuses it too
    from ..resources.services import stop_recorded

    # `grove up`'s services first, by their recorded pid + start time, wherever they run now (issue 23).
    stopped = stop_recorded(settings, path.name) if real.parent == trees else []
    return stopped + portable.stop_inside(real, portable.process_backend(settings.process_backend), settings.stop_grace)


def safe_rmtree(settings: Settings, path: Path) -> None:
    """Delete ``path`` only when it provably lies inside trees/, never following a symlink out."""
    trees = settings.trees_path.resolve()
    if os.path.islink(path):
        raise GroveError(f"refusing to delete {path}: it is a symlink")
    real = Path(os.path.realpath(path))
    if real == trees or not real.is_relative_to(trees):
        raise GroveError(f"refusing to delete {path}: it is not inside {trees}")
    shutil.rmtree(real)  # rmtree unlinks symlinks inside the tree, it never follows them
