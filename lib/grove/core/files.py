"""Copying files into a worktree (reflinks where the filesystem can, modes, times and symlinks
kept), and hashing them.

Which copier runs is portable.copy_backend's choice (GNU cp where it exists, Python's own elsewhere).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import proc

try:  # CPython's own sha256: the same digest, without loading OpenSSL through hashlib (1 ms, issue 12)
    from _sha256 import sha256  # 3.10, 3.11
except ImportError:
    try:
        from _sha2 import sha256  # 3.12+
    except ImportError:
        from hashlib import sha256


def clone_files(src: Path, dst: Path, relpaths: list[str], backend: str) -> None:
    """Copy ``relpaths`` from ``src`` to the same place under ``dst``: modes, times and symlinks kept."""
    if not relpaths:
        return
    if backend == "cp":
        # --parents keeps each file's relative path; -a keeps modes and symlinks; one cp for all.
        proc.run(["cp", "-a", "--reflink=auto", "--parents", "-t", dst, "--", *relpaths], cwd=src)
        return
    for rel in relpaths:
        source, target = src / rel, dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
