"""Where a setup's milliseconds go: Grove's own work, split by kind, for docs/BENCHMARKS.md.

Builds the sample app (no dependencies, so installs and the db do not hide anything), then in a
fresh Python process per sample: times the imports a `setup` needs beyond Invoke's own, the
configuration, and `chain.setup(--no-install --no-db)` with every subprocess and fsync timed; then
how long the interpreter takes to exit after Invoke's run, for a bare `inv` and for `inv setup`.
Prints medians over the samples. Byte-compiles Grove first, as an installed package is.

    python scripts/profile_setup.py [--samples N]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROVE = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, os, sys, time
t0 = time.perf_counter()
import invoke, invoke.program                       # bare `inv` pays this too
t1 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import grove.cli.tasks                                  # the task table (`inv --list` pays this)
t2 = time.perf_counter()
from grove.ops import chain
from grove.core import config, proc
import dotenv.parser                                # imported on first use during a setup
t3 = time.perf_counter()
from grove.core.report import Reporter

spent = {"git": [], "fsync": []}
real_run, real_fsync = proc.subprocess.run, os.fsync
def timed_run(argv, *a, **k):
    s = time.perf_counter(); out = real_run(argv, *a, **k)
    spent["git"].append((" ".join(map(str, argv[3:5])) if "-C" in argv[:2] else argv[1], time.perf_counter() - s))
    return out
def timed_fsync(fd):
    s = time.perf_counter(); real_fsync(fd); spent["fsync"].append(time.perf_counter() - s)
proc.subprocess.run, os.fsync = timed_run, timed_fsync
t4 = time.perf_counter()
settings = config.load({"repo": sys.argv[2]})
t5 = time.perf_counter()
state = chain.setup(settings, chain.Request(sys.argv[3], install=False, db=False), Reporter(quiet=True))
t6 = time.perf_counter()
print(json.dumps({"imports_tasks": t2 - t1, "imports_setup": t3 - t2, "config": t5 - t4, "chain": t6 - t5,
                  "git": spent["git"], "fsync": sum(spent["fsync"]), "fsyncs": len(spent["fsync"]),
                  "steps": {k: v["seconds"] for k, v in state["steps"].items()}}))
'''


# Invoke's program run to the end, then the interpreter's own exit timed from outside (the
# parent's clock after the child is reaped, less the time the child printed when its run ended).
EXIT_CHILD = r'''
import sys, time
from invoke.main import program
try:
    program.run()
except SystemExit:
    pass
sys.stderr.write(f"\n{time.time()!r}\n")
'''


def exit_ms(argv: list[str], env: dict, cwd: Path) -> float:
    out = subprocess.run([sys.executable, "-c", EXIT_CHILD, *argv], env=env, cwd=cwd, capture_output=True, text=True)
    return (time.time() - float(out.stderr.strip().splitlines()[-1])) * 1000


def main() -> int:
    samples = int(sys.argv[sys.argv.index("--samples") + 1]) if "--samples" in sys.argv else 9
    sys.path.insert(0, str(GROVE / "scripts"))
    import sample_app

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("ADW_")}
    env.update(ADW_PORT_SLOTS="60", ADW_BACKEND_PORT_BASE="32000", ADW_FRONTEND_PORT_BASE="33000")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(GROVE / "lib")], check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="grove-profile-") as tmp:
        app = sample_app.build(Path(tmp), None, None)
        runs = []
        for i in range(samples + 1):
            out = subprocess.run([sys.executable, "-c", CHILD, str(GROVE / "lib"), str(app), f"p{i}"], env=env,
                                 capture_output=True, text=True, check=True)
            if i:  # the first one warms the git-version and ignore caches
                runs.append(json.loads(out.stdout))
        noop = Path(tmp) / "noop"
        noop.mkdir()
        (noop / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n")
        exits: dict[str, list[float]] = {"bare inv": [], "inv setup": []}
        for i in range(samples):
            exits["bare inv"].append(exit_ms(["-r", str(noop), "noop"], env, app))
            exits["inv setup"].append(exit_ms(["-r", str(GROVE), "setup", "--adw-id", f"x{i}", "--no-install",
                                               "--no-db", "--quiet"], env, app))
    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    git_total = [sum(t for _, t in r["git"]) for r in runs]
    calls: dict[str, list[float]] = {}
    for r in runs:
        for name, t in r["git"]:
            calls.setdefault(name, []).append(t)
    chain_own = [r["chain"] - g - r["fsync"] for r, g in zip(runs, git_total)]
    print(f"medians of {len(runs)} samples, in ms (inv setup --no-install --no-db on the sample app)")
    print(f"  imports for the task table (grove.cli.tasks)       {med([r['imports_tasks'] for r in runs]):6.1f}")
    print(f"  imports for setup (chain and steps, dotenv)           {med([r['imports_setup'] for r in runs]):6.1f}")
    print(f"  configuration (config.load)                        {med([r['config'] for r in runs]):6.1f}")
    print(f"  chain.setup, all of it                             {med([r['chain'] for r in runs]):6.1f}")
    print(f"    subprocesses ({len(runs[0]['git'])})                                  {med(git_total):6.1f}")
    for name, ts in calls.items():
        print(f"      git {name:<44} {med(ts):6.1f}")
    print(f"    fsync ({runs[0]['fsyncs']}: state twice, port registry, ownership journal)  {med([r['fsync'] for r in runs]):6.1f}")
    print(f"    Grove's Python (locks, files, state, ports)      {med(chain_own):6.1f}")
    for name, ts in exits.items():
        print(f"  interpreter exit after the run: {name:<18}     {statistics.median(ts):6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
