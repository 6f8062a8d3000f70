"""`grove adopt PATH`: a linked worktree someone else made (plain `git worktree add`, an IDE, another
tool) becomes a Grove agent: ports, env files, repointed configs, installs, database and a state
(issue 22, item 3).

Its files and its branch stay as they are. The branch is not written into the ownership journal,
so no Grove path (teardown --delete-branch, merge --cleanup, doctor --fix) ever deletes it. The
state records ``adopted: true`` and the worktree's own path. Teardown releases what Grove gave it
(ports, database, the state, which is archived) and:
- a worktree inside trees/ (adopted under its directory name) is removed like any agent's, its
  uncommitted work salvaged first;
- a worktree anywhere else stays where it is, with every file in it: Grove only un-hides the
  tracked files it hid there, giving back their committed content when they still hold nothing
  but Grove's rewrite (``release``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core import events, git, ids, locks, state
from ..core.config import Settings
from ..core.errors import bad_input
from ..core.report import Reporter
from ..resources import agentdb, hidden, ports, table
from ..resources.shape import Agent
from . import steps, worktree

OP = "adopt"


def adopt(settings: Settings, path: Path | str, adw_id: str | None = None, *, install: bool = True,
          db: bool = True, dry_run: bool = False, report: Reporter | None = None) -> dict:
    """Make the linked worktree at ``path`` an agent; returns its state. Idempotent: adopting the
    same worktree again finishes what is missing. ``dry_run``: validate only and say what would be done."""
    report = report or Reporter(quiet=True)
    real = Path(os.path.realpath(path))
    entry = _linked_worktree(settings, Path(path), real)
    adw_id = _agent_id(settings, real, adw_id)
    if dry_run:
        again = state.load(settings, adw_id) is not None
        return {"dry_run": True, "adw_id": adw_id, "worktree_path": str(real), "branch": entry["branch"],
                "action": "finish" if again else "adopt",
                "steps": [r.name for r in table.FILES] + (["install"] if install else []) + (["db"] if db else [])}
    with locks.locked(settings.lock_path(f"op-{adw_id}"), 0, f"{adw_id} is already being set up or torn down"):
        current = state.load(settings, adw_id)
        if current is not None and os.path.realpath(current["worktree_path"]) != str(real):
            raise bad_input(f"agent {adw_id} already exists with the worktree {current['worktree_path']}",
                            "pass another --adw-id")
        branch, base = entry["branch"], (current or {}).get("base_branch") or settings.base_branch
        agentdb.check(settings, adw_id, connect=db)
        claim = ports.claim(settings, adw_id)
        created = current is None
        try:
            if created:
                # Inside trees/ the path is written as every agent's is (settings.worktree_path), elsewhere as found.
                inside = real.parent == Path(os.path.realpath(settings.trees_path))
                where = settings.worktree_path(adw_id) if inside else real
                fresh = state.new(settings, adw_id, branch, base, base_commit=_base_commit(settings, base, branch),
                                  worktree_path=str(where), adopted=True, hidden_by_grove=[])
                state.update(settings, adw_id, lambda s: steps.record_claim(s, claim), create=fresh)
                events.emit(settings, "adopted", adw_id, None, "created", path=str(real), branch=branch)
            return _provision(settings, adw_id, real, claim, install, db, report)
        except BaseException:
            if created:
                _undo(settings, adw_id, real, report)
            raise


def _linked_worktree(settings: Settings, given: Path, real: Path) -> dict:
    """Git's entry for exactly ``real``: a linked worktree of this repository, on a branch (exit 2 otherwise)."""
    if not real.is_dir():
        raise bad_input(f"{given} is not a directory", "give the path of a worktree made with `git worktree add`")
    if real == Path(os.path.realpath(settings.repo)):
        raise bad_input(f"{given} is the main checkout", "adopt a linked worktree (`git worktree add`)")
    entry = git.worktree_for(settings.repo, real)
    if entry is None:
        raise bad_input(f"{given} is not a worktree of {settings.repo}",
                        "make it with `git worktree add`, or pass --repo for its repository")
    if entry.get("locked") == "initializing":
        raise bad_input(f"{given} is still being created (git lists it as initializing)", "see `grove doctor`")
    pool_dir = os.path.realpath(settings.trees_path / ".pool")
    if str(real).startswith(pool_dir + os.sep) or real.name.startswith("."):
        raise bad_input(f"{given} is one of Grove's own worktrees (pool or merge)")
    if not entry.get("branch"):
        raise bad_input(f"{given} has a detached HEAD",
                        f"check out a branch there first: git -C {given} switch -c NAME")
    if entry["branch"] == settings.base_branch:
        raise bad_input(f"{given} is on the base branch {entry['branch']}",
                        "an agent works on a branch of its own: git switch -c NAME there first")
    return entry


def _agent_id(settings: Settings, real: Path, wanted: str | None) -> str:
    """Inside trees/ the id is the directory's name (Grove finds an agent's worktree there by id);
    elsewhere ``--adw-id``, else one made from the directory's name (``-2`` ... on a collision)."""
    mine = state.agent_at(settings, str(real))
    if real.parent == Path(os.path.realpath(settings.trees_path)):
        ids.check_id(real.name)
        if wanted and wanted != real.name:
            raise bad_input(f"{real} lies in the trees directory: it can only be adopted as {real.name!r}",
                            f"drop --adw-id, or use --adw-id {real.name}")
        if mine not in (None, real.name):
            raise bad_input(f"{real} is already agent {mine}")
        return real.name
    if mine is not None:
        if wanted and wanted != mine:
            raise bad_input(f"{real} is already agent {mine}", f"use --adw-id {mine}, or tear {mine} down first")
        return mine
    if wanted:
        ids.check_id(wanted)
        ids.check_unique_case(settings, wanted)
        if state.load(settings, wanted) is not None or settings.worktree_path(wanted).exists():
            raise bad_input(f"agent id {wanted!r} is taken", "pick another --adw-id")
        return wanted
    return ids.free_id(settings, ids.from_name(real.name))


def _base_commit(settings: Settings, base: str, branch: str) -> str | None:
    """Where the branch left the base: its own commits are counted from there (`commits`)."""
    ref = git.base_ref(settings.repo, settings.remote, base)
    if ref is None:
        return None
    return git.git(settings.repo, "merge-base", ref, f"refs/heads/{branch}", check=False) or None


def _provision(settings: Settings, adw_id: str, wt: Path, claim: ports.Claim, install: bool, db: bool,
               report: Reporter) -> dict:
    """The setup chain's file, install and db steps on the adopted worktree (no git change to it)."""
    done: dict = {}
    before = set(hidden.hidden_files(wt))
    previous = (state.load(settings, adw_id) or {}).get("steps", {})
    values = steps.env_values(settings, adw_id, claim.ports)
    switches = {"install": install, "db": db}
    written: list[str] = []
    newly_hidden: list[str] = []
    for resource in table.PREPARED:
        if resource.name == "submodules":
            continue  # the user's worktree: its submodules are as they are
        assert resource.prepare is not None
        with report.step(resource.name, OP, done, long=resource.long) as info:
            if not switches.get(resource.switch, True):
                info["outcome"], info["detail"] = "skipped", f"--no-{resource.switch}"
            else:
                agent = Agent(settings, adw_id, wt, values, earlier=previous.get(resource.name, {}).get("outcome"))
                info["outcome"], info["detail"], files = resource.prepare(agent)
                written.extend(files)
        if resource is table.FILES[-1]:
            steps.files_written(settings, wt, written, report)
            newly_hidden = sorted(set(hidden.hidden_files(wt)) - before)

    def finish(s: dict) -> None:
        s["steps"].update(done)
        s["error_message"] = None
        s["hidden_by_grove"] = sorted(set(s.get("hidden_by_grove") or []) | set(newly_hidden))

    final = state.update(settings, adw_id, finish)
    report.say(f"✓ adopted {wt} as {adw_id} on {final['branch']}")
    return final


def _undo(settings: Settings, adw_id: str, wt: Path, report: Reporter) -> None:
    """A failed first adoption gives back what it took; the worktree's files stay (they are the user's)."""
    for what, action in (("un-hide Grove's files", lambda: release(settings, state.load(settings, adw_id) or {}, wt)),
                         ("drop the database", lambda: agentdb.apply_teardown(
                             settings, adw_id, agentdb.plan_teardown(settings, adw_id, False))),
                         ("release the port claim", lambda: ports.release(settings, adw_id)),
                         ("remove the state", lambda: state.discard(settings, adw_id))):
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the original error is the one raised
            report.warn(f"rollback could not {what}: {exc}; `grove doctor` will show it")
    events.emit(settings, "rolled_back", adw_id, "created", None, path=str(wt))


def kept_in_place(settings: Settings, s: dict | None) -> bool:
    """An adopted agent whose worktree lies outside trees/: teardown leaves it where it is."""
    if not s or not s.get("adopted"):
        return False
    return os.path.realpath(s["worktree_path"]) != os.path.realpath(settings.worktree_path(s["adw_id"]))


def release(settings: Settings, s: dict, wt: Path) -> dict:
    """Give an adopted worktree back: the tracked files Grove hid there (skip-worktree) are shown to
    git again, and those that still hold only Grove's rewrite get their committed content back. An
    agent's edit of one stays, now visible to `git status` (nothing is lost). Every other file
    (.ports.env, env copies: ignored files) stays as it is."""
    out: dict = {"unhidden": [], "restored": [], "kept_edits": []}
    if not wt.is_dir() or not s.get("hidden_by_grove"):
        return out
    names = sorted(set(s["hidden_by_grove"]) & set(hidden.hidden_files(wt)))
    if not names:
        return out
    edited = set(hidden.edited_hidden(settings, s, wt))
    git.git(wt, "update-index", "--no-skip-worktree", "--", *names)
    restore = [n for n in names if n not in edited]
    if restore:
        git.git(wt, "checkout", "--", *restore)  # the index holds the committed content
    out.update(unhidden=names, restored=restore, kept_edits=sorted(edited & set(names)))
    return out



# -- `grove init --git-hook`: adopt every new linked worktree --------------------------------------

HOOK_MARK = "# grove: adopt new linked worktrees (grove init --git-hook)"


def hook_script(grove: str) -> str:
    """A post-checkout hook that adopts a worktree `git worktree add` just made, and returns at once
    for every other checkout: the old HEAD of a new worktree's first checkout is the null id, and
    only a linked worktree's git dir lies under worktrees/. Grove's own `worktree add` uses
    --no-checkout, so the hook never fires for the worktrees Grove makes. It never fails a checkout."""
    return f"""#!/bin/sh
{HOOK_MARK}
# Every checkout in an existing worktree (the main one too) returns here at once.
case "$1" in *[!0]*) exit 0 ;; esac
case "$(git rev-parse --git-dir 2>/dev/null)" in */worktrees/*) ;; *) exit 0 ;; esac
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
{grove} adopt "$PWD" --quiet || echo "grove: $PWD was not adopted; see above, then: grove adopt \\"$PWD\\"" >&2
exit 0
"""


def check_git_hook(settings: Settings) -> tuple[Path, str | None]:
    """The post-checkout hook's path and text; exit 2 when a hook that is not Grove's is there (it
    is never overwritten). Called before `init` changes anything."""
    hooks = Path(git.git(settings.repo, "rev-parse", "--git-path", "hooks"))
    target = (hooks if hooks.is_absolute() else settings.repo / hooks) / "post-checkout"
    try:
        current = target.read_text(errors="replace")
    except FileNotFoundError:
        current = None
    if current is not None and HOOK_MARK not in current:
        raise bad_input(f"{target} exists and is not Grove's: it is left as it is",
                        "to adopt new worktrees from it, add this line to it: grove adopt \"$PWD\" --quiet "
                        "(run it only when $1 is all zeros)")
    return target, current


def install_git_hook(settings: Settings, grove: str) -> list[str]:
    """Write the post-checkout hook into the repository's hooks directory (core.hooksPath honoured)."""
    target, current = check_git_hook(settings)
    script = hook_script(grove)
    if current == script:
        return [f"{target}: Grove's post-checkout hook already present"]
    target.parent.mkdir(parents=True, exist_ok=True)
    locks.atomic_write_text(target, script, 0o755)
    return [f"{target}: added Grove's post-checkout hook (adopts each worktree `git worktree add` makes)"]
