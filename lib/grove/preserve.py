"""Nothing is lost: before Grove removes a worktree or deletes a branch, what it holds is saved.

- A commit that no ref outside the thing being removed reaches (a detached HEAD's commits, an
  unmerged branch tip) is kept under ``refs/grove-backup/<label>/<utc>-<sha>``.
- Uncommitted work (tracked edits, staged or not, and untracked files that are not ignored) is
  committed, without touching the worktree's index, stash or HEAD, under
  ``refs/grove-salvage/<adw_id>/<utc>-<sha>``.

Both kinds of ref are unique per event, created with git's "must not exist yet" check, and never
rewritten or deleted by Grove (issue 10). Ignored files (.env and other secrets) are never put into
git objects, and Grove never pushes these refs.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from . import git, proc
from .errors import GroveError, bad_input

BACKUP = "refs/grove-backup/"
SALVAGE = "refs/grove-salvage/"
_ZERO = "0" * 40
# Salvage commits are Grove's own: a fixed identity means they work where the user has none set.
_IDENTITY = {"GIT_AUTHOR_NAME": "Grove salvage", "GIT_AUTHOR_EMAIL": "grove@localhost",
             "GIT_COMMITTER_NAME": "Grove salvage", "GIT_COMMITTER_EMAIL": "grove@localhost"}


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _create_ref(repo: Path, prefix: str, commit: str, message: str) -> str:
    """A new ref ``<prefix><utc>-<sha12>`` at ``commit``; never overwrites one that exists."""
    base = f"{prefix}{_stamp()}-{commit[:12]}"
    for n in range(1, 100):
        ref = base if n == 1 else f"{base}-{n}"
        current = git.rev(repo, ref)
        if current == commit:
            return ref  # the same event twice in one second: already saved
        if current is None:
            out = proc.run(["git", "-C", repo, "update-ref", "--create-reflog", "-m", message, ref, commit, _ZERO],
                           check=False)
            if out.returncode == 0:
                return ref
    raise GroveError(f"could not create a unique ref under {prefix}", hint="run `inv doctor`")


def reachable_elsewhere(repo: Path, commit: str, excluding: tuple[str, ...] = ()) -> bool:
    """True when some ref other than ``excluding`` (full ref names) contains ``commit``."""
    out = git.git(repo, "for-each-ref", "--format=%(refname)", f"--contains={commit}")
    return any(ref and ref not in excluding for ref in out.split("\n"))


def backup(repo: Path, label: str, commit: str, why: str) -> str:
    """Keep ``commit`` reachable under refs/grove-backup/<label>/..., unconditionally."""
    return _create_ref(repo, f"{BACKUP}{label}/", commit, f"grove backup: {why}")


def keep_if_unreachable(repo: Path, commit: str | None, label: str, why: str,
                        excluding: tuple[str, ...] = ()) -> str | None:
    """Back ``commit`` up when nothing else reaches it; returns the backup ref, or None."""
    if not commit or commit == _ZERO or git.rev(repo, commit) is None:
        return None
    if reachable_elsewhere(repo, commit, excluding):
        return None
    return backup(repo, label, commit, why)


def salvage(repo: Path, adw_id: str, worktree: Path) -> str | None:
    """Commit the worktree's uncommitted work under refs/grove-salvage/<adw_id>/...; None if clean.

    A copy of the worktree's own index is used, so its index, stash and HEAD are untouched, and
    files Grove hid with skip-worktree (its rewritten configs) stay as committed.
    """
    if not git.dirty_files(worktree):
        return None
    head = git.git(worktree, "rev-parse", "HEAD")
    index = Path(git.git(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    fd, scratch = tempfile.mkstemp(prefix="grove-salvage-index-", dir=index.parent)
    os.close(fd)
    try:
        if index.exists():
            Path(scratch).write_bytes(index.read_bytes())
        else:
            os.unlink(scratch)
        env = {"GIT_INDEX_FILE": scratch, **_IDENTITY}
        proc.run(["git", "-C", worktree, "add", "-A", "--", "."], env=env, what="git add (salvage)")
        tree = proc.run(["git", "-C", worktree, "write-tree"], env=env).stdout.strip()
        message = f"grove salvage of {adw_id}: uncommitted work in {worktree}"
        commit = proc.run(["git", "-C", worktree, "commit-tree", tree, "-p", head, "-m", message],
                          env=env).stdout.strip()
    finally:
        Path(scratch).unlink(missing_ok=True)
    return _create_ref(repo, f"{SALVAGE}{adw_id}/", commit, "grove salvage")


def listing(repo: Path, prefix: str) -> list[dict]:
    """Every ref under ``prefix`` (BACKUP or SALVAGE, optionally narrowed), newest first."""
    fmt = "%(refname)%00%(objectname)%00%(creatordate:iso-strict)%00%(subject)"
    out = git.git(repo, "for-each-ref", "--sort=-refname", f"--format={fmt}", prefix)
    rows = []
    for line in filter(None, out.split("\n")):
        ref, commit, date, subject = line.split("\0")
        rows.append({"ref": ref, "commit": commit, "date": date, "subject": subject})
    return rows


def salvages(repo: Path, adw_id: str | None = None) -> list[dict]:
    rows = listing(repo, f"{SALVAGE}{adw_id}/" if adw_id else SALVAGE)
    for row in rows:
        row["adw_id"] = row["ref"][len(SALVAGE):].rsplit("/", 1)[0]
        row["files"] = [f for f in git.git(repo, "diff", "--name-only", f"{row['commit']}^", row["commit"]).split("\n")
                        if f]
    return rows


_SALVAGE_REF = re.compile(r"^refs/grove-salvage/[A-Za-z0-9_-]+/[0-9TZ]+-[0-9a-f]+(-[0-9]+)?$")


def restore(repo: Path, ref: str, worktree: Path) -> dict:
    """Put a salvage's changes back into ``worktree`` (clean, any HEAD) as uncommitted work.

    The salvage is applied as a three-way patch against its own parent, so it lands on a worktree
    whose branch moved on too; a clash leaves git's conflict markers and says so (exit 1).
    """
    if not _SALVAGE_REF.match(ref) or git.rev(repo, ref) is None:
        raise bad_input(f"{ref!r} is not a Grove salvage ref", "see `inv salvage` for the list")
    dirty = git.dirty_files(worktree)
    if dirty:
        raise GroveError(f"{worktree} has uncommitted changes ({', '.join(dirty[:3])}); nothing was restored",
                         hint="commit them, or tear down with --force to salvage them too, then restore")
    fd, patch = tempfile.mkstemp(prefix="grove-restore-", suffix=".patch")
    os.close(fd)
    try:
        git.git(repo, "diff", "--binary", f"--output={patch}", f"{ref}^", ref)
        applied = proc.run(["git", "-C", worktree, "apply", "--3way", "--whitespace=nowarn", patch], check=False)
    finally:
        os.unlink(patch)
    # --3way stages what it applies; unstage so the work looks as it did (edits, untracked files).
    proc.run(["git", "-C", worktree, "reset", "--quiet"], check=False)
    files = git.dirty_files(worktree)
    if applied.returncode != 0:
        raise GroveError(f"{ref} was restored into {worktree} with conflicts: {proc.tail(applied.stderr)}",
                         hint="resolve the conflict markers in those files")
    return {"ref": ref, "worktree": str(worktree), "files": files}
