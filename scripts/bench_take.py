"""The pooled take of two Grove checkouts side by side (issue 24 §2): A/B, interleaved with a bare `inv`.

    .venv/bin/python scripts/bench_take.py [--takes N] [--old PATH/TO/OTHER/CHECKOUT]

Each round runs a bare `inv` (a one-task file), then `grove setup` in a sample app whose pool was
filled by the same checkout, for each checkout; the report is each checkout's median difference
from the bare start-up measured next to it. Without --old, only this checkout is measured. Both
checkouts' modules are byte-compiled first, the apps and the port registry are private and
removed afterwards. `git worktree add --detach /tmp/grove-old <commit>` makes an older checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GROVE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(GROVE / "scripts"))
import sample_app  # noqa: E402
from bench import INV, timed  # noqa: E402

PY = sys.executable


def grove(lib: Path, *args: str) -> list[str]:
    """`grove ARGS` run from ``lib`` (the console script's own two lines, with that lib first)."""
    return [PY, "-c", f"import sys; sys.path.insert(0, {str(lib)!r}); sys.argv = ['grove', *{list(args)!r}]; "
                      "from grove.cli import main; main()"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--takes", type=int, default=12)
    parser.add_argument("--old", type=Path, help="another Grove checkout to measure alongside this one")
    args = parser.parse_args()
    libs = {"this": GROVE / "lib"} | ({"old": args.old.resolve() / "lib"} if args.old else {})
    tmp = Path(tempfile.mkdtemp(prefix="grove-bench-take-"))
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("ADW_")}
        env.update(ADW_PORT_SLOTS="80", ADW_POOL_REFRESH="off", ADW_PORT_REGISTRY=str(tmp / "ports.json"))
        empty = tmp / "empty"
        empty.mkdir()
        (empty / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n")
        apps = {}
        for i, (name, lib) in enumerate(libs.items()):
            subprocess.run([PY, "-m", "compileall", "-q", str(lib)], check=True)
            app_env = dict(env, ADW_BACKEND_PORT_BASE=str(36000 + 200 * i), ADW_FRONTEND_PORT_BASE=str(36100 + 200 * i))
            app = sample_app.build(tmp / name, None, None)
            subprocess.run(grove(lib, "pool", "--size", str(args.takes), "--quiet"), cwd=app, env=app_env, check=True,
                           stdout=subprocess.DEVNULL)
            apps[name] = (app, app_env)
        samples: dict[str, list[float]] = {"bare": [], **{name: [] for name in libs}}
        for n in range(args.takes):
            samples["bare"].append(timed([INV, "-r", str(empty), "noop"], tmp, env))
            order = list(libs.items())
            for name, lib in order if n % 2 == 0 else order[::-1]:  # neither checkout always runs first
                app, app_env = apps[name]
                samples[name].append(timed(grove(lib, "setup", "--adw-id", f"t{n}", "--quiet"), app, app_env))
        for name, (app, _) in apps.items():
            states = [json.loads((app / "agents" / f"t{n}" / "adw_state.json").read_text()) for n in range(args.takes)]
            assert all(s["from_pool"] for s in states), f"{name}: a setup did not come from the pool"
        print(f"bare inv: median {statistics.median(samples['bare']) * 1000:.1f} ms")
        for name, lib in libs.items():
            diffs = [a - b for a, b in zip(samples[name], samples["bare"])]
            print(f"{name} ({lib.parent}): pooled grove setup median {statistics.median(samples[name]) * 1000:.1f} ms, "
                  f"minus the bare inv next to it: median {statistics.median(diffs) * 1000:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
