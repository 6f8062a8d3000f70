"""Crash-safe fast-forwards of a checkout: the user's own checkout of the base (issue 20, item 4).

`git merge --ff-only` killed midway (Ctrl-C, SIGTERM, kill -9) left hundreds of files modified in
the user's checkout and sometimes `.git/index.lock`, with the branch not moved; a re-run refused
("uncommitted changes") and nothing knew how to finish. Here a fast-forward from ``old`` to ``new``:

1. records its intent (``<git dir>/grove-fast-forward.json``) before touching anything;
2. writes the files through a private copy of the index (`git read-tree -m -u old new`), so git's
   own index.lock is never taken on the real index and a kill leaves none behind;
3. moves the branch by compare-and-swap (it must still be at ``old``);
4. swaps the private index into place (``os.replace``: the index is old or new, never between);
5. forgets the intent.

Run again after a crash (the merge queue does, and `doctor --fix`), the same steps finish the job:
files a killed run already wrote hold ``new``'s content, and step 2 first takes them into the
private index as written, so git sees them as up to date instead of as the user's edits. A file
that holds neither version is someone's edit: git refuses to overwrite it and nothing is lost.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..core import git, proc
from ..core.errors import GroveError
from ..core.faults import fault

INTENT = "grove-fast-forward.json"
_PRIVATE_INDEX = "grove-fast-forward.index"


def git_dir(checkout: Path) -> Path:
    """The checkout's own git directory (``.git``, or a linked worktree's admin dir)."""
    return Path(git.git(checkout, "rev-parse", "--absolute-git-dir"))


def pending(checkout: Path) -> dict | None:
    """The fast-forward a killed run left unfinished in ``checkout``, or None."""
    try:
        data = json.loads((git_dir(checkout) / INTENT).read_text(encoding="utf-8"))
    except (OSError, ValueError, GroveError):
        return None
    return data if isinstance(data, dict) and {"branch", "old", "new"} <= data.keys() else None


def fast_forward(checkout: Path, branch: str, old: str, new: str, timeout: float = 600.0) -> tuple[bool, str]:
    """Bring ``checkout`` (on ``branch``) from ``old`` to ``new``: (done, why not).

    Nothing is changed when it refuses: a file in the way holding an edit, or the branch moved.
    """
    admin = git_dir(checkout)
    intent = admin / INTENT
    resumed = intent.exists()  # a refused resume keeps its record: doctor goes on showing it
    _write_intent(intent, {"branch": branch, "old": old, "new": new})
    private = admin / _PRIVATE_INDEX
    _fresh_private_index(admin, private)
    env = {"GIT_INDEX_FILE": str(private)}
    _absorb_written(checkout, old, new, env)
    out = proc.run(["git", "-C", checkout, "read-tree", "-m", "-u", old, new], env=env, check=False,
                   timeout=timeout)
    if out.returncode != 0:
        _discard(private, None if resumed else intent)
        return False, f"could not bring {checkout} along: {proc.tail(out.stderr)}"
    fault("fast-forward", "after", "files")
    if git.rev(checkout, f"refs/heads/{branch}") != new:
        moved = proc.run(["git", "-C", checkout, "update-ref", "-m", "grove merge", f"refs/heads/{branch}", new, old],
                         check=False)
        if moved.returncode != 0:  # the branch moved meanwhile: its files go back as they were
            proc.run(["git", "-C", checkout, "read-tree", "-m", "-u", new, old], env=env, check=False, timeout=timeout)
            _discard(private, intent)
            return False, f"{branch} moved while {checkout} was being brought along"
    fault("fast-forward", "after", "ref")
    os.replace(private, admin / "index")
    intent.unlink(missing_ok=True)
    return True, ""


def finish(checkout: Path, timeout: float = 600.0) -> tuple[bool, str] | None:
    """Finish a fast-forward a killed run left in ``checkout``; None when there is none."""
    left = pending(checkout)
    if left is None:
        return None
    return fast_forward(checkout, left["branch"], left["old"], left["new"], timeout)


def _write_intent(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fresh_private_index(admin: Path, private: Path) -> None:
    """A copy of the real index; what a killed run left (its copy, git's lock on it) goes first."""
    for leftover in (private, private.with_name(private.name + ".lock")):
        leftover.unlink(missing_ok=True)
    if (admin / "index").is_file():
        shutil.copyfile(admin / "index", private)


def _absorb_written(checkout: Path, old: str, new: str, env: dict[str, str]) -> None:
    """Files that already hold ``new``'s version (a killed run wrote them) enter the private index
    as they are, so `read-tree -m -u` keeps them instead of calling them local changes."""
    changed = [p for p in git.git(checkout, "diff", "--name-only", "--no-renames", "-z", old, new).split("\0") if p]
    if not changed:
        return
    wanted = _blobs(checkout, new, changed)
    present = [p for p in changed if p in wanted and os.path.isfile(checkout / p) and not os.path.islink(checkout / p)]
    hashes = _hash_files(checkout, present)
    written = [p for p in present if hashes.get(p) == wanted[p]]
    gone = [p for p in changed if p not in wanted and not os.path.lexists(checkout / p)]
    if written:
        proc.run(["git", "-C", checkout, "update-index", "--add", "-z", "--stdin"], env=env,
                 input="\0".join(written) + "\0")
    if gone:
        proc.run(["git", "-C", checkout, "update-index", "--remove", "-z", "--stdin"], env=env,
                 input="\0".join(gone) + "\0")


def _blobs(checkout: Path, commit: str, paths: list[str]) -> dict[str, str]:
    """path -> blob id in ``commit``, for the regular files among ``paths`` that it has."""
    out = git.git(checkout, "ls-tree", "-z", commit, "--", *paths)
    blobs = {}
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        mode, kind, sha = meta.split()
        if kind == "blob" and mode != "120000":
            blobs[path] = sha
    return blobs


def _hash_files(checkout: Path, paths: list[str]) -> dict[str, str]:
    """Each file's blob id as git would store it (filters and all), without writing objects."""
    if not paths:
        return {}
    out = proc.run(["git", "-C", checkout, "hash-object", "--stdin-paths"], input="\n".join(paths) + "\n")
    return dict(zip(paths, out.stdout.split()))


def _discard(private: Path, intent: Path | None) -> None:
    private.unlink(missing_ok=True)
    if intent is not None:
        intent.unlink(missing_ok=True)
