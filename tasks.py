"""Invoke's entry for `inv -r path/to/grove ...` and for Grove vendored at a repo's root.

A thin shim: the tasks live in the package (lib/grove/cli/tasks.py), which the `grove` command uses too.
This checkout's lib/ goes first on sys.path, so `inv -r` runs this checkout even when another
Grove is installed.

An `inv` installed on its own (pipx, a system package) lacks Grove's dependencies: then this
checkout's own .venv (built by `make venv`) lends them when its Python version matches, and
otherwise Grove says what to do instead of failing mid-run with "No module named 'dotenv'".
"""

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_LIB = str(_HERE / "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)


def _lend_dependencies() -> None:
    missing = [name for name in ("dotenv",) if importlib.util.find_spec(name) is None]
    if not missing:
        return
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = _HERE / ".venv" / "lib" / version / "site-packages"
    if site.is_dir():
        sys.path.append(str(site))
        missing = [name for name in missing if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"grove: this inv ({sys.executable}) lacks {', '.join(missing)}, which Grove needs.\n"
                 f"  hint: run {_HERE / '.venv/bin/inv'} (after `make venv` in {_HERE}), or install Grove "
                 "as a tool: `uv tool install PATH` / `pipx install PATH`, then use `grove`")


_lend_dependencies()

from grove.cli.tasks import ns  # noqa: E402,F401  (Invoke looks for `ns`)
