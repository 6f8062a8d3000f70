"""Invoke's entry for `inv -r path/to/grove ...` and for Grove vendored at a repo's root.

A thin shim: the tasks live in the package (lib/grove/tasks.py), which the `grove` command uses too.
This checkout's lib/ goes first on sys.path, so `inv -r` runs this checkout even when another
Grove is installed.
"""

import sys
from pathlib import Path

_LIB = str(Path(__file__).resolve().parent / "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)

from grove.tasks import ns  # noqa: E402,F401  (Invoke looks for `ns`)
