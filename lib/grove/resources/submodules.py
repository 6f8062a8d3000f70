"""Submodules in agent worktrees (issue 14): checked out at the commits the base records, from the
main checkout's own copies, without the network; and never lost when a worktree is removed.

Setup. ``git submodule update --init`` in a new worktree would clone every submodule again from
its URL. Grove clones each one from the main checkout's copy instead (the populated submodule's git
dir, else ``.git/modules/<name>``): a local clone hardlinks the objects and needs no network. The
URL is handed to that one command through ``GIT_CONFIG_*`` so nothing is written to the config the
worktrees share with the main checkout, and file transport (refused for submodules by default
since git 2.38.1, CVE-2022-39253) is allowed for that command only, whose one clone is from that
path. The clone's ``origin`` is then set to the main copy's own origin, so the agent fetches and
pushes where the main checkout does; a commit the main copy lacks is fetched from there (the only
network use). Nested submodules are done level by level the same way. A submodule that cannot be
checked out fails the step (exit 1): setup never says "ready" with an empty submodule directory.
Submodules with ``update = none`` or ``active = false`` are skipped, as git itself does.

Removal. git refuses to remove a worktree with submodules unless forced, and forcing deletes the
submodules' git dirs (``.git/worktrees/<id>/modules/``) with every commit made in them. So
:func:`save` first keeps, in the main repository under
``refs/grove-backup/submodules/<adw_id>/<path>/...`` (listed by `inv doctor`), every submodule
branch tip or HEAD that the main checkout's copy has no ref for and, when salvaging, the
submodule's uncommitted work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from ..core import git, proc
from ..safety import preserve
from ..core.config import Settings
from ..core.errors import GroveError
from .shape import Agent, Outcome, Resource

_HINT = ("run `git submodule update --init --recursive` in {repo} once (after `git pull` if it is behind the "
         "base): Grove checks out each worktree's submodules from the main checkout's copies")


class Sub(NamedTuple):
    name: str | None  # from .gitmodules; None for a gitlink without an entry there
    path: str  # relative to its superproject
    commit: str  # what the superproject records


def listed(root: Path) -> list[Sub]:
    """The submodules of the checkout at ``root``: gitlinks in its index, named by its .gitmodules."""
    links = {}
    for entry in filter(None, git.git(root, "ls-files", "--stage", "-z").split("\0")):
        meta, _, path = entry.partition("\t")
        mode, sha, stage = meta.split()
        if mode == "160000" and stage == "0":
            links[path] = sha
    if not links:
        return []
    names = {}
    if (root / ".gitmodules").is_file():
        out = proc.run(["git", "-C", root, "config", "-f", ".gitmodules", "-z", "--get-regexp",
                        r"^submodule\..*\.path$"], check=False).stdout
        for item in filter(None, out.split("\0")):
            key, _, value = item.partition("\n")
            names[value] = key[len("submodule."):-len(".path")]
    return [Sub(names.get(path), path, sha) for path, sha in sorted(links.items())]


def _checkout(directory: Path) -> str | None:
    """HEAD of the repository checked out at exactly ``directory``, or None when it is not one.

    A clone whose checkout failed has a HEAD but no index (git clones submodules with
    --no-checkout): that is not checked out either.
    """
    if not (directory / ".git").exists():
        return None
    out = proc.run(["git", "-C", directory, "rev-parse", "--show-toplevel", "--path-format=absolute",
                    "--git-path", "index", "HEAD"], check=False)
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 3 or os.path.realpath(lines[0]) != os.path.realpath(directory):
        return None
    return lines[2] if os.path.exists(lines[1]) else None


def _git_dir(directory: Path) -> Path:
    return Path(git.git(directory, "rev-parse", "--absolute-git-dir"))


def _source(main_copy: Path, parent_git_dir: Path | None, sub: Sub) -> Path | None:
    """The main checkout's copy of ``sub``: its populated checkout's git dir, else the parent's
    ``modules/<name>`` (a submodule git keeps after `git submodule deinit`)."""
    if _checkout(main_copy):
        return _git_dir(main_copy)
    kept = parent_git_dir / "modules" / sub.name if parent_git_dir and sub.name else None
    return kept if kept and (kept / "HEAD").is_file() else None


def _opted_out(root: Path, main_copy_parent: Path, sub: Sub) -> bool:
    """``update = none`` (in .gitmodules or the main checkout's config) or ``active = false``."""
    def get(args: list) -> str:
        return proc.run(["git", *args], check=False).stdout.strip().lower()

    key = f"submodule.{sub.name}"
    if get(["-C", root, "config", "-f", ".gitmodules", "--get", f"{key}.update"]) == "none":
        return True
    if (main_copy_parent / ".git").exists():
        if get(["-C", main_copy_parent, "config", "--get", f"{key}.update"]) == "none":
            return True
        return get(["-C", main_copy_parent, "config", "--bool", "--get", f"{key}.active"]) == "false"
    return False


def _config_env(pairs: dict[str, str]) -> dict[str, str]:
    """Config for one git command (and the commands it starts) without writing any file; unlike
    ``-c key=value`` it takes any name, '=' included."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs.items()):
        env.update({f"GIT_CONFIG_KEY_{i}": key, f"GIT_CONFIG_VALUE_{i}": value})
    return env


def populate(settings: Settings, worktree: Path) -> tuple[str, str]:
    """The chain's submodules step: (outcome, detail). Submodules already checked out (a re-run,
    or an agent's own work in them) are left as they are."""
    if not (worktree / ".gitmodules").is_file():
        # No .gitmodules: no submodule Grove could check out (a bare gitlink has no URL to clone).
        # Answered without the two git calls below, on every setup of every such repo (issue 12).
        return "skipped", "no submodules"
    notes: list[str] = []
    changed = _level(settings, worktree, settings.repo, git.common_dir(settings.repo), "", notes)
    if not notes:
        return "skipped", "no submodules"
    return ("done" if changed else "unchanged"), "; ".join(notes)


def _level(settings: Settings, root: Path, main_root: Path, main_git_dir: Path | None, prefix: str,
           notes: list[str]) -> bool:
    changed = False
    for sub in listed(root):
        where = prefix + sub.path
        target, main_copy = root / sub.path, main_root / sub.path
        if sub.name is None:
            notes.append(f"{where}: skipped (no entry in .gitmodules)")
            continue
        if _checkout(target) is None:
            if _opted_out(root, main_root, sub):
                notes.append(f"{where}: skipped (update = none or not active)")
                continue
            _check_out(settings, root, sub, where, _source(main_copy, main_git_dir, sub))
            notes.append(f"{where}: {sub.commit[:10]}")
            changed = True
        else:
            notes.append(f"{where}: present")
        nested_git_dir = _git_dir(main_copy) if _checkout(main_copy) else (
            main_git_dir / "modules" / sub.name if main_git_dir else None)
        changed |= _level(settings, target, main_copy, nested_git_dir, where + "/", notes)
    return changed


def _check_out(settings: Settings, root: Path, sub: Sub, where: str, source: Path | None) -> None:
    target = root / sub.path
    timeout = settings.git_timeout
    cloned = (target / ".git").exists()
    if source is None and not cloned:
        raise GroveError(f"submodule {where} is not checked out in the main checkout {settings.repo}",
                         hint=_HINT.format(repo=settings.repo))
    env = {} if cloned else _config_env({"protocol.file.allow": "always", f"submodule.{sub.name}.url": str(source)})
    first = proc.run(["git", "-C", root, "submodule", "update", "--init", "--no-fetch", "--quiet", "--", sub.path],
                     env=env, check=False, timeout=timeout)
    if not cloned and (target / ".git").exists():
        assert source is not None  # not cloned: without a source, the check above raised
        upstream = proc.run(["git", "-C", source, "config", "--get", "remote.origin.url"], check=False).stdout.strip()
        if upstream:  # the agent fetches and pushes where the main checkout does, not into its copy
            git.git(target, "remote", "set-url", "origin", upstream)
    if _checkout(target) == sub.commit:
        return
    if (target / ".git").exists() and git.rev(target, sub.commit) is None:
        # The main checkout's copy lacks this commit (it is behind the base): the one network use.
        proc.run(["git", "-C", target, "fetch", "--quiet", "origin"], check=False, timeout=timeout)
        first = proc.run(["git", "-C", root, "submodule", "update", "--no-fetch", "--quiet", "--", sub.path],
                         check=False, timeout=timeout)
    if _checkout(target) != sub.commit:
        raise GroveError(f"submodule {where} could not be checked out at {sub.commit[:12]}: "
                         f"{proc.tail(first.stderr or first.stdout, 2)}",
                         hint=f"commit {sub.commit[:12]} is neither in the main checkout's copy nor on its origin; "
                              + _HINT.format(repo=settings.repo))


# ---------------------------------------------------------------------------------------------
# Before a worktree is removed


def _populated(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    """(path, directory) of every checked-out submodule under ``root``, deepest first.

    A checkout whose index git cannot read (a setup that failed in its own checkout, before any
    submodule could be cloned) lists none, so its removal goes on as for one without submodules."""
    out = []
    try:
        subs = listed(root)
    except GroveError:
        return []
    for sub in subs:
        directory = root / sub.path
        if _is_repo(directory):
            out += _populated(directory, f"{prefix}{sub.path}/")
            out.append((prefix + sub.path, directory))
    return out


def paths(worktree: Path) -> set[str]:
    """The worktree's own submodule paths (gitlinks in its index), for which :func:`save` answers."""
    try:
        return {sub.path for sub in listed(worktree)}
    except GroveError:
        return set()


def _is_repo(directory: Path) -> bool:
    """A submodule clone without a checkout still holds a git dir worth looking at."""
    if not (directory / ".git").exists():
        return False
    top = proc.run(["git", "-C", directory, "rev-parse", "--show-toplevel"], check=False).stdout.strip()
    return bool(top) and os.path.realpath(top) == os.path.realpath(directory)


def _ref_label(adw_id: str, where: str) -> str:
    return f"submodules/{adw_id}/{re.sub(r'[^A-Za-z0-9_/-]', '_', where)}"


def _kept_elsewhere(settings: Settings, where: str, commit: str) -> bool:
    """A ref in the main checkout's copy of this submodule, or in the main repository, reaches it."""
    repos = [settings.repo]
    main_copy = settings.repo / where
    if _is_repo(main_copy):
        repos.insert(0, main_copy)
    return any(git.rev(repo, commit) and preserve.reachable_elsewhere(repo, commit) for repo in repos)


def _keep(settings: Settings, directory: Path, commit: str, label: str, why: str) -> str:
    """Copy ``commit`` into the main repository under refs/grove-backup/<label>/..., by fetching a
    ref made for it in the submodule (a fetch runs no hook of the main repository, a push would)."""
    ref = preserve.backup(directory, label, commit, why)
    git.git(settings.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(directory),
            f"{ref}:{ref}", timeout=settings.git_timeout)
    return ref


def _commits_held(directory: Path) -> list[str]:
    """Every commit the submodule's own repository holds that goes with the worktree: HEAD, its
    branches, tags, stash entries and HEAD reflog (the clone's .git is deleted with the worktree)."""
    listed = git.git(directory, "for-each-ref", "--format=%(objectname)", "refs/heads", "refs/tags").split()
    for log in ("refs/stash", "HEAD"):
        out = proc.run(["git", "-C", directory, "log", "-g", "--format=%H", log, "--"], check=False)
        listed += out.stdout.split() if out.returncode == 0 else []
    peeled = {git.rev(directory, sha) for sha in ["HEAD", *dict.fromkeys(listed)]}
    return sorted(c for c in peeled if c)


def save(settings: Settings, worktree: Path, adw_id: str, salvage: bool) -> list[str] | None:
    """Keep what the worktree's submodules hold before the worktree is removed.

    Returns the refs made in the main repository, or None when no submodule is checked out (git
    then removes the worktree without being forced). Without ``salvage``, a worktree with
    uncommitted work, in it or in a submodule, is refused: the forced removal would discard it.
    """
    found = _populated(worktree)
    if not found:
        return None
    if not salvage:
        dirty = git.dirty_files(worktree)
        if dirty:
            raise GroveError(f"{worktree} has uncommitted changes: {', '.join(dirty[:5])}",
                             hint="commit them (in the submodule too), or pass --force to save them first")
    refs = []
    for where, directory in found:
        label = _ref_label(adw_id, where)
        if salvage and _checkout(directory):  # a clone that was never checked out holds no work
            work, _ = preserve.salvage(directory, adw_id, directory)  # its own submodules: saved on their own
            if work:
                commit = git.rev(directory, work)
                if commit is None:  # salvage() has just made this ref: only a hand in the clone removes it
                    raise GroveError(f"salvage ref {work} vanished from {directory} before it was copied",
                                     hint="the worktree was left as it is; run the teardown again")
                refs.append(_keep(settings, directory, commit, f"{label}/uncommitted",
                                  f"uncommitted work in submodule {where} of {adw_id}"))
        for tip in _commits_held(directory):
            if not _kept_elsewhere(settings, where, tip):
                refs.append(_keep(settings, directory, tip, label, f"submodule {where} of {adw_id} before removal"))
    return refs


def prepare(agent: Agent) -> Outcome:
    outcome, detail = populate(agent.settings, agent.path)
    return outcome, detail, []


# What a removal must save of a submodule (its unpushed commits) is saved by the worktree's removal
# itself, before any file goes (ops/worktree.py): no release here.
RESOURCE = Resource("submodules", prepare)
