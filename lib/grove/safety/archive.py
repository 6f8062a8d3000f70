"""The archive of ignored files: what git does not see is kept aside before a worktree goes (issue 20).

Before any removal of a worktree (lib/grove/ops/worktree.py ``remove``, the one removal path),
every git-ignored file in it that is worth keeping is moved (a rename on the same filesystem, else
a copy then a delete) to::

    <agents_dir>/.archive/<adw_id>/<utc YYYYmmddTHHMMSSZ[-n]>/files/<path in the worktree>
    <agents_dir>/.archive/<adw_id>/<utc ...>/manifest.json

Directories are 0700 and files lose their group and other bits (a .env holds secrets); content and
mtime stay. Nothing here ever goes into git objects. Worth keeping is every ignored file except
regenerable dependency and build output (by directory name, ``ADW_REGENERABLE_DIRS``) and Grove's
own generated files that are unchanged since Grove wrote them (decided by content by the caller,
``is_own``). Archives are listed and restored by `grove salvage`, and deleted only by
`grove gc --archives --older-than-days N`, which deletes only directories holding Grove's manifest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Callable

from ..core import git, locks, numbers
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.files import sha256

MANIFEST = "manifest.json"
DUMPS = "db"  # where safety/dbdump.py puts database dumps in the same folder
FILES = "files"
KIND = "grove-archive"  # in every manifest: only a directory holding it is Grove's to delete
PRIVATE_DIR = 0o700


# -- what is worth keeping --------------------------------------------------------------------


def _regenerable(rel: str, names: tuple[str, ...]) -> bool:
    """``rel`` lies in (or is) a directory whose name says it is regenerable output."""
    parts = rel.rstrip("/").split("/")
    dirs = parts if rel.endswith("/") else parts[:-1]
    return any(part in names for part in dirs)


def worth_keeping(wt: Path, regenerable: tuple[str, ...], is_own: Callable[[str], bool] = lambda rel: False) -> list[str]:
    """The ignored files of the worktree ``wt`` worth keeping, as paths relative to it, sorted.

    ``--directory`` makes git name an ignored directory once instead of every file in it, so a
    node_modules of 100 000 files costs one line; only ignored directories that are not
    regenerable are walked (everything under an ignored directory is ignored too).
    """
    raw = git.git(wt, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
    found: set[str] = set()
    walked: list[str] = []
    # git also lists what is inside a listed directory (an untracked directory of ignored files
    # comes as `app/`, `app/server/`, `app/server/x.db`): one walk of the outermost is enough.
    for rel in sorted(filter(None, raw.split("\0"))):
        if _regenerable(rel, regenerable) or any(rel.startswith(d) for d in walked):
            continue
        if rel.endswith("/") and not os.path.islink(wt / rel.rstrip("/")):
            walked.append(rel)
            found.update(_walk(wt, rel.rstrip("/"), regenerable))
        else:
            found.add(rel.rstrip("/"))
    return sorted(rel for rel in found if not is_own(rel))


def _walk(root: Path, rel: str, regenerable: tuple[str, ...]) -> list[str]:
    """Every file and symlink under ``root/rel`` (never following a link), regenerable dirs pruned."""
    out = []
    for directory, subdirs, files in os.walk(root / rel):
        here = os.path.relpath(directory, root)
        links = [d for d in subdirs if os.path.islink(os.path.join(directory, d))]
        subdirs[:] = [d for d in subdirs if d not in regenerable and d not in links]
        prefix = "" if here == "." else here.replace(os.sep, "/") + "/"
        out += [prefix + name for name in files + links]
    return out


def every_file(directory: Path, regenerable: tuple[str, ...]) -> list[str]:
    """Every file under ``directory`` but regenerable output: for a directory git cannot read."""
    return sorted(_walk(directory, ".", regenerable))


def sizes(wt: Path, rels: list[str]) -> dict[str, int]:
    out = {}
    for rel in rels:
        try:
            out[rel] = os.lstat(wt / rel).st_size
        except OSError:
            continue  # gone since it was listed: nothing to keep
    return out


def check_limit(settings: Settings, wt: Path, rels: list[str], force: bool) -> None:
    """Refuse (exit 1, nothing changed) a removal that would archive more than ADW_ARCHIVE_LIMIT_MB,
    naming the biggest files; ``force`` archives them anyway (disk is cheaper than lost work)."""
    found = sizes(wt, rels)
    total = sum(found.values())
    if force or total <= settings.archive_limit_mb * 1024 * 1024:
        return
    biggest = sorted(found.items(), key=lambda item: -item[1])[:5]
    shown = ", ".join(f"{rel} ({_mb(size)})" for rel, size in biggest)
    raise GroveError(f"{wt} holds {_mb(total)} of ignored files worth keeping, over ADW_ARCHIVE_LIMIT_MB="
                     f"{settings.archive_limit_mb:g}: {shown}; nothing was removed",
                     hint="move them out (or delete what you do not need), raise ADW_ARCHIVE_LIMIT_MB, "
                          "or pass --force to archive them anyway")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# -- moving them aside ------------------------------------------------------------------------


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _private_dir(path: Path) -> None:
    """``path`` and every missing parent, each 0700 (mkdir's ``parents`` gives the others the umask's mode)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:
            pass
        os.chmod(directory, PRIVATE_DIR)


def _new_event_dir(settings: Settings, adw_id: str) -> Path:
    """``.archive/<adw_id>/<utc>``, made by this call (mkdir is the claim: unique per event)."""
    parent = settings.archive_path / adw_id
    _private_dir(parent)
    stamp = _stamp()
    for n in range(1, 1000):
        event = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(event, PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(event, PRIVATE_DIR)
        return event
    raise GroveError(f"could not make a new archive directory under {parent}")


def _describe(wt: Path, rel: str) -> dict | None:
    """The manifest row of one file: path, size, sha256 (of a symlink: of its target), mode, mtime."""
    path = wt / rel
    try:
        st = os.lstat(path)
    except OSError:
        return None
    row: dict = {"path": rel, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime}
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        row.update(symlink=target, sha256=sha256(target.encode()).hexdigest())
    elif stat.S_ISREG(st.st_mode):
        row["sha256"] = _sha256_of(path)
    else:
        return None  # a socket or fifo a server left: nothing to keep
    return row


def _sha256_of(path: Path) -> str:
    h = sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _move(src: Path, dst: Path) -> None:
    """Rename on one filesystem; across filesystems copy (mtime kept, links as links), then delete."""
    _private_dir(dst.parent)
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        if not os.path.lexists(src):
            return  # deleted since it was listed (by what ran there): nothing left to keep
        raise
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
        os.unlink(src)
    if not os.path.islink(dst):
        os.chmod(dst, stat.S_IMODE(os.lstat(dst).st_mode) & 0o700)


def keep(settings: Settings, wt: Path, rels: list[str], *, adw_id: str, branch: str | None, reason: str) -> dict:
    """Move ``rels`` (paths inside ``wt``) into a new archive; returns {path, files, bytes, paths}.

    The manifest is written before the first file moves: a kill midway leaves an archive that says
    what it was meant to hold, and the files not moved yet are still in the worktree (the removal
    only starts after this returns)."""
    rows = [row for row in (_describe(wt, rel) for rel in rels) if row]
    if not rows:
        return empty()
    event = _new_event_dir(settings, adw_id)
    total = sum(r["size"] for r in rows)
    manifest = {"kind": KIND, "version": 1, "adw_id": adw_id, "worktree": str(wt), "branch": branch,
                "reason": reason, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": rows, "count": len(rows), "bytes": total}
    locks.atomic_write_text(event / MANIFEST, json.dumps(manifest, indent=2) + "\n", 0o600)
    for row in rows:
        _move(wt / row["path"], event / FILES / row["path"])
    return {"path": str(event), "id": _ident(settings, event), "files": len(rows), "bytes": total,
            "paths": [r["path"] for r in rows]}


def empty() -> dict:
    return {"path": None, "id": None, "files": 0, "bytes": 0, "paths": []}


# -- listing, restoring, deleting --------------------------------------------------------------


def _ident(settings: Settings, event: Path) -> str:
    return event.relative_to(settings.archive_path).as_posix()


def _manifest(event: Path) -> dict | None:
    try:
        data = json.loads((event / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == KIND else None


def _events(settings: Settings, adw_id: str | None = None) -> list[tuple[Path, dict]]:
    root = settings.archive_path
    if not root.is_dir():
        return []
    parents = [root / adw_id] if adw_id else sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    out = []
    for parent in parents:
        if not parent.is_dir() or parent.is_symlink():
            continue
        for event in sorted(parent.iterdir()):
            data = _manifest(event) if event.is_dir() and not event.is_symlink() else None
            if data is not None:
                out.append((event, data))
    return out


def listing(settings: Settings, adw_id: str | None = None) -> list[dict]:
    """Every archive Grove made (newest first): `grove salvage` shows them with ``kind: "archive"``."""
    rows = [{"kind": "archive", "id": _ident(settings, event), "path": str(event), "adw_id": data.get("adw_id"),
             "date": data.get("created_at"), "reason": data.get("reason"), "worktree": data.get("worktree"),
             "branch": data.get("branch"), "bytes": data.get("bytes"),
             "files": [r["path"] for r in data.get("files", [])]}
            for event, data in _events(settings, adw_id)]
    return sorted(rows, key=lambda r: (r["date"] or "", r["id"]), reverse=True)


def find(settings: Settings, ident: str) -> tuple[Path, dict]:
    """An archive by its id (``<adw_id>/<utc>``, as listed) or its path; bad input otherwise."""
    root = settings.archive_path.resolve()
    candidate = Path(ident) if os.path.isabs(ident) else root / ident
    real = candidate.resolve()
    data = _manifest(real) if real.is_relative_to(root) and real.is_dir() else None
    if data is None:
        raise bad_input(f"{ident!r} is not a Grove archive (no manifest under {settings.archive_path})",
                        "see `grove salvage` for the list")
    return real, data


def exists(settings: Settings, ident: str) -> bool:
    try:
        find(settings, ident)
        return True
    except GroveError:
        return False


def restore(settings: Settings, ident: str, wt: Path) -> dict:
    """Copy an archive's files back into the worktree ``wt`` (the archive stays until gc deletes it).

    A file that exists there and differs is never overwritten: the restore refuses (exit 1) naming
    every such file, and nothing is copied. Files already identical are left as they are."""
    event, data = find(settings, ident)
    if not wt.is_dir():
        raise GroveError(f"there is no worktree at {wt} to restore into; nothing was restored",
                         hint="set the agent up again (`grove setup --adw-id ...`), then restore")
    rows = [r for r in data.get("files", []) if os.path.lexists(event / FILES / r["path"])]
    clashes, todo = [], []
    for row in rows:
        target = wt / row["path"]
        if not os.path.lexists(target):
            todo.append(row)
        elif not _same(event / FILES / row["path"], target):
            clashes.append(row["path"])
    if clashes:
        raise GroveError(f"not restored: {len(clashes)} file(s) in {wt} exist and differ from the archive: "
                         f"{', '.join(clashes[:10])}", hint="move them aside, then restore again")
    for row in todo:
        _copy_back(event / FILES / row["path"], wt / row["path"], row)
    return {"kind": "archive", "id": _ident(settings, event), "archive": str(event), "worktree": str(wt),
            "files": [r["path"] for r in todo], "unchanged": [r["path"] for r in rows if r not in todo]}


def _same(a: Path, b: Path) -> bool:
    if os.path.islink(a) or os.path.islink(b):
        return os.path.islink(a) and os.path.islink(b) and os.readlink(a) == os.readlink(b)
    return b.is_file() and _sha256_of(a) == _sha256_of(b)


def _copy_back(src: Path, dst: Path, row: dict) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    shutil.copy2(src, dst)
    os.chmod(dst, row.get("mode", 0o600))


def check_days(value: object) -> float:
    """``--older-than-days``: a finite number of days, 0 or more, else bad input (exit 2)."""
    return float(numbers.parse(value, "--older-than-days", numbers.DAYS))


def prune(settings: Settings, older_than_days: float, dry_run: bool = False) -> dict:
    """Delete the archives Grove made (a manifest of its own) older than ``older_than_days``."""
    cutoff = time.time() - older_than_days * 86400
    deleted = []
    for event, data in _events(settings):
        made = _created(data, event)
        if made > cutoff:
            continue
        deleted.append({"id": _ident(settings, event), "path": str(event), "adw_id": data.get("adw_id"),
                        "date": data.get("created_at"), "bytes": data.get("bytes"), "files": data.get("count")})
        if not dry_run:
            _delete(event)
    return {"older_than_days": older_than_days, "dry_run": dry_run, "archives_deleted": deleted}


def _delete(event: Path) -> None:
    """An archive of ignored files: its files, then its manifest (a kill between leaves one that
    the next prune finishes). A database dump that landed in the same folder (safety/dbdump.py
    shares the second's folder) is not an archive of files: it stays, with the folder."""
    if not (event / DUMPS).exists():
        shutil.rmtree(event)
        return
    if (event / FILES).exists():
        shutil.rmtree(event / FILES)
    (event / MANIFEST).unlink()


def _created(data: dict, event: Path) -> float:
    try:
        import calendar

        return calendar.timegm(time.strptime(str(data.get("created_at")), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return event.stat().st_mtime
