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

from ..core import git, proc
from ..core.errors import GroveError, bad_input

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


# What a worktree's own git directory points at: none of it survives the worktree's removal.
_PSEUDO_REFS = ("HEAD", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD", "ORIG_HEAD",
                "rebase-merge/orig-head", "rebase-apply/orig-head")


def worktree_commits(repo: Path, admin: Path) -> list[str]:
    """Every commit a worktree's own records hold, newest first: HEAD, operations in progress,
    per-worktree refs (refs/worktree/, refs/bisect/) and every entry of its HEAD reflog.

    Read from its admin directory (.git/worktrees/<name>), so this works when the checkout is gone.
    """
    found: list[str] = []
    for name in _PSEUDO_REFS:
        text = _read(admin / name)
        found.append(git.rev(repo, text[4:].strip()) or "" if text.startswith("ref:") else text[:40])
    refs = admin / "refs"
    if refs.is_dir():
        found += [_read(f)[:40] for f in sorted(refs.rglob("*")) if f.is_file()]
    for line in reversed(_read(admin / "logs" / "HEAD").splitlines()):
        found += line.split(" ", 2)[:2][::-1]  # new, then old
    return _existing_commits(repo, list(dict.fromkeys(c for c in found if len(c) == 40 and c != _ZERO)))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _existing_commits(repo: Path, shas: list[str]) -> list[str]:
    if not shas:
        return []
    out = proc.run(["git", "-C", repo, "cat-file", "--batch-check=%(objectname) %(objecttype)"],
                   input="".join(f"{s}\n" for s in shas), check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith(" commit")]


def keep_unreachable(repo: Path, commits: list[str], *, other_heads: list[str], label: str, why: str) -> list[str]:
    """Back up every commit of ``commits`` that no ref and no other worktree's HEAD reaches.

    One rev-list finds them; `merge-base --independent` keeps only their tips, so a detached line
    of ten commits costs one backup ref, not ten.
    """
    if not commits:
        return []
    refs = git.git(repo, "for-each-ref", "--format=%(objectname)").split()
    walk = proc.run(["git", "-C", repo, "rev-list", "--stdin"],
                    input="".join(f"{c}\n" for c in commits) + "".join(f"^{r}\n" for r in refs + other_heads))
    alone = set(walk.stdout.split())
    lost = [c for c in commits if c in alone]
    if len(lost) > 1:
        tips = set(git.git(repo, "merge-base", "--independent", *lost).split())
        lost = [c for c in lost if c in tips]
    return [backup(repo, label, c, why) for c in lost]


def checkout_problem(worktree: Path, admin: Path | None = None) -> str | None:
    """Why git, run in ``worktree``, would not be reading that worktree itself; None when it would.

    With a linked worktree's `.git` file deleted, `git -C <worktree>` walks up and finds the main
    repository (trees/ lies inside it): a salvage or a status run there reads and writes the main
    checkout instead (issue 20, item 13). ``admin``: the worktree's .git/worktrees/<name>, when known.
    """
    out = proc.run(["git", "-C", worktree, "rev-parse", "--path-format=absolute", "--show-toplevel", "--git-dir"],
                   check=False)
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) < 2:
        return f"git cannot read the worktree {worktree} ({proc.tail(out.stderr, 1) or 'no .git'})"
    top, gitdir = (os.path.realpath(line) for line in lines[:2])
    if top != os.path.realpath(worktree):
        return f"{worktree} is not a checkout of its own: git finds {top} there (its .git file is missing or wrong)"
    if admin is not None and gitdir != os.path.realpath(admin):
        return f"{worktree}'s .git points at {gitdir}, not at its own {admin}"
    return None


def require_checkout(worktree: Path, admin: Path | None = None) -> None:
    problem = checkout_problem(worktree, admin)
    if problem:
        raise GroveError(problem + "; nothing was saved or removed",
                         hint=f"restore its .git file (`git worktree repair {worktree}` from the main checkout), "
                              "or tear down with --force: its files are then moved to the archive, never deleted")


def salvage(repo: Path, adw_id: str, worktree: Path, generated: tuple[str, ...] = (),
            hidden_edits: list[str] | None = None) -> tuple[str | None, list[str]]:
    """Commit the worktree's uncommitted work under refs/grove-salvage/<adw_id>/...

    Returns (the ref or None when there was nothing to save, nested repositories whose commits are
    only in their own .git and so cannot be saved in this repository: the caller must move them).
    A copy of the worktree's own index is used, so its index, stash and HEAD are untouched. Files
    Grove wrote (``generated``: .ports.env, env copies) stay out: they may hold secrets. Tracked
    files Grove hid with skip-worktree are taken only when the agent edited them (``hidden_edits``).
    The salvage commit holds the working files; when what was staged differs from them, the staged
    version is a commit of its own and the salvage's second parent (``<ref>^2``), so both are kept
    (issue 20, item 14a). Salvage runs only inside the worktree itself (``require_checkout``).
    """
    require_checkout(worktree)
    # `git update-index --assume-unchanged` (a lower-case tag) hides an edit from `git status` and
    # `git add`: such files are compared again in the scratch index.
    assumed = [e[2:] for e in git.git(worktree, "ls-files", "-v", "-z").split("\0") if e[:1].islower()]
    if not git.dirty_files(worktree) and not hidden_edits and not assumed:
        return None, []
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
        if generated:
            proc.run(["git", "-C", worktree, "reset", "-q", "--", *generated], env=env, check=False)
        staged = proc.run(["git", "-C", worktree, "write-tree"], env=env, check=False).stdout.strip()
        if hidden_edits:
            proc.run(["git", "-C", worktree, "update-index", "--no-skip-worktree", "--", *hidden_edits], env=env)
        if assumed:
            proc.run(["git", "-C", worktree, "update-index", "--no-assume-unchanged", "--", *assumed], env=env)
        proc.run(["git", "-C", worktree, "add", "-A", "--", "."], env=env, what="git add (salvage)")
        if generated:
            proc.run(["git", "-C", worktree, "reset", "-q", "--", *generated], env=env, check=False)
        nested = _nested_repositories(repo, worktree, env)
        tree = proc.run(["git", "-C", worktree, "write-tree"], env=env).stdout.strip()
        head_tree = git.git(worktree, "rev-parse", "HEAD^{tree}")
        if tree == head_tree and staged in ("", head_tree):
            return None, nested
        parents = ["-p", head]
        if staged and staged not in (head_tree, tree):
            # The index holds a version of some file that is neither HEAD's nor the working copy's.
            kept = proc.run(["git", "-C", worktree, "commit-tree", staged, "-p", head, "-m",
                             f"grove salvage of {adw_id}: what was staged (the index) in {worktree}"], env=env)
            parents += ["-p", kept.stdout.strip()]
        message = f"grove salvage of {adw_id}: uncommitted work in {worktree}"
        commit = proc.run(["git", "-C", worktree, "commit-tree", tree, *parents, "-m", message],
                          env=env).stdout.strip()
    finally:
        Path(scratch).unlink(missing_ok=True)
    return _create_ref(repo, f"{SALVAGE}{adw_id}/", commit, "grove salvage"), nested


def _nested_repositories(repo: Path, worktree: Path, env: dict) -> list[str]:
    """Gitlinks `add -A` made for repositories inside the worktree whose commit this repo lacks."""
    staged = proc.run(["git", "-C", worktree, "ls-files", "-s", "-z"], env=env).stdout
    links = [(entry.split(" ")[1], entry.split("\t", 1)[1]) for entry in staged.split("\0")
             if entry.startswith("160000 ")]
    present = set(_existing_commits(repo, [sha for sha, _ in links]))
    return [path for sha, path in links if sha not in present]


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
        names = git.git(repo, "diff", "-z", "--name-only", f"{row['commit']}^", row["commit"])
        row["files"] = [f for f in names.split("\0") if f]
    return rows


_SALVAGE_REF = re.compile(r"^refs/grove-salvage/[A-Za-z0-9_-]+/[0-9TZ]+-[0-9a-f]+(-[0-9]+)?$")


def restore(repo: Path, ref: str, worktree: Path, hidden: list[str] | None = None,
            edited_hidden: list[str] | None = None) -> dict:
    """Put a salvage's changes back into ``worktree`` (clean, any HEAD) as uncommitted work.

    The salvage is applied as a three-way patch against its own parent, so it lands on a worktree
    whose branch moved on too; a clash leaves git's conflict markers and names those files (exit 1).
    Files Grove hides there with skip-worktree (``hidden``: repointed configs, a tracked .env laid
    over) cannot take a patch: their working copy is Grove's rewrite, not the committed file. The
    salvage's version of each is written back as the agent left it, its worktree paths moved to this
    worktree; one the agent has edited here (``edited_hidden``) is a real conflict and is named
    (issue 20, item 10). Nothing is restored when anything conflicts before the patch is applied.
    """
    if not _SALVAGE_REF.match(ref) or git.rev(repo, ref) is None:
        raise bad_input(f"{ref!r} is not a Grove salvage ref", "see `inv salvage` for the list")
    require_checkout(worktree)
    dirty = git.dirty_files(worktree)
    if dirty:
        raise GroveError(f"{worktree} has uncommitted changes ({', '.join(dirty[:3])}); nothing was restored",
                         hint="commit them, or tear down with --force to salvage them too, then restore")
    changed = [f for f in git.git(repo, "diff", "-z", "--name-only", f"{ref}^", ref).split("\0") if f]
    hidden_here = [f for f in changed if f in set(hidden or [])]
    clash = [f for f in hidden_here if f in set(edited_hidden or [])]
    if clash:
        raise GroveError(f"not restored: {', '.join(clash)} in {worktree} hold(s) edits of their own that the "
                         "salvage would overwrite", hint="commit or move those edits, then restore again")
    fd, patch = tempfile.mkstemp(prefix="grove-restore-", suffix=".patch")
    os.close(fd)
    try:
        git.git(repo, "diff", "--binary", f"--output={patch}", f"{ref}^", ref)
        excludes = [f"--exclude={_glob_escape(f)}" for f in hidden_here]
        applied = proc.run(["git", "-C", worktree, "apply", "--3way", "--whitespace=nowarn", *excludes, patch],
                           check=False)
    finally:
        os.unlink(patch)
    conflicted = sorted(f for f in git.git(worktree, "diff", "-z", "--name-only", "--diff-filter=U").split("\0") if f)
    # --3way stages what it applies; unstage so the work looks as it did (edits, untracked files).
    proc.run(["git", "-C", worktree, "reset", "--quiet"], check=False)
    if applied.returncode != 0 and conflicted:
        raise GroveError(f"{ref} was restored into {worktree} with conflicts in {', '.join(conflicted)}",
                         hint="resolve the conflict markers in those files")
    if applied.returncode != 0:
        raise GroveError(f"{ref} could not be applied to {worktree}; nothing was restored: "
                         f"{proc.tail(applied.stderr)}", hint="restore into a worktree on the salvage's own commit")
    for name in hidden_here:
        _write_hidden(repo, ref, worktree, name)
    return {"ref": ref, "worktree": str(worktree), "files": sorted(set(git.dirty_files(worktree)) | set(hidden_here))}


def _glob_escape(path: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


def _write_hidden(repo: Path, ref: str, worktree: Path, name: str) -> None:
    """The salvage's copy of a hidden file, with the salvaged worktree's path replaced by this one's."""
    import subprocess

    blob = subprocess.run(["git", "-C", str(repo), "cat-file", "blob", f"{ref}:{name}"], capture_output=True,
                          env=proc.clean_env(), check=False)
    target = worktree / name
    if blob.returncode != 0:  # the agent deleted it: the salvage says so
        target.unlink(missing_ok=True)
        return
    data = blob.stdout
    subject = git.git(repo, "log", "-1", "--format=%s", ref)
    old = subject.rpartition(" uncommitted work in ")[2]
    if old and old != str(worktree):
        data = data.replace(old.encode(), str(worktree).encode())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
