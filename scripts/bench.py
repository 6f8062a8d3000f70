"""`make bench`: Grove against the bare commands it wraps, measured side by side in one run.

Builds its own fixtures under bench/fixtures/ (git-ignored): the seed-shaped sample app with one
real dependency on each side (so uv links a venv and bun links node_modules from their caches).
Prints medians and ratios and writes bench/results.json. Not a timed test: machines are noisy.
The Postgres rows (a database per agent, cloned from a ~50 MB template) come from
scripts/bench_postgres.py, on a throwaway server of their own.

    python scripts/bench.py [--runs N]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GROVE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(GROVE / "lib"))
sys.path.insert(0, str(GROVE / "scripts"))

import bench_postgres  # noqa: E402
import sample_app  # noqa: E402

from grove.deps import find_tool  # noqa: E402

FIXTURES = GROVE / "bench" / "fixtures"
INV = str(Path(sys.executable).parent / "inv")
ENV = dict(os.environ, ADW_PORT_SLOTS="120", ADW_BACKEND_PORT_BASE="30000", ADW_FRONTEND_PORT_BASE="31000",
           UV_LINK_MODE="hardlink")

# The seed's steps as a plain shell script: the baseline Grove is measured against.
SCRIPT = r"""#!/usr/bin/env bash
set -euo pipefail
id=$1; slot=$2; cd "$3"
# Parallel copies of this script fetch once beforehand: parallel fetches race (DESIGN.md pitfalls).
[ "${4:-}" = nofetch ] || git fetch -q origin main
git worktree add -q --no-track -b "plain/$id" "plain/$id" origin/main
wt="plain/$id"
printf 'BACKEND_PORT=%s\nFRONTEND_PORT=%s\nVITE_BACKEND_URL=http://localhost:%s\n' \
  $((9500+slot)) $((9600+slot)) $((9500+slot)) > "$wt/.ports.env"
cp .env "$wt/.env"; cat "$wt/.ports.env" >> "$wt/.env"
cp app/server/.env.sample "$wt/app/server/.env"; cat "$wt/.ports.env" >> "$wt/app/server/.env"
sed -i "s#\./#$PWD/$wt/#g" "$wt/.mcp.json" "$wt/playwright-mcp-config.json"
(cd "$wt/app/server" && uv sync --all-extras -q)
(cd "$wt/app/client" && bun install --silent)
(cd "$wt" && BACKEND_PORT=$((9500+slot)) ./scripts/reset_db.sh)
"""


def timed(argv, cwd, env=ENV) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


BASELINE_FAILURES: list[int] = []


def parallel(argvs, cwd, retry: bool = False) -> float:
    """Wall time of ``argvs`` run together. With ``retry``, failures (the plain scripts' git races)
    are counted and rerun one by one inside the timing, as a script user would have to."""
    start = time.perf_counter()
    procs = [subprocess.Popen(a, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for a in argvs]
    failed = [a for a, p in zip(argvs, procs) if p.wait() != 0]
    if failed and not retry:
        raise SystemExit(f"bench: {len(failed)} of {len(argvs)} parallel runs failed")
    BASELINE_FAILURES.append(len(failed))
    for argv in failed:
        subprocess.run(["git", "-C", str(cwd), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(cwd), "branch", "-q", "-D", f"plain/{argv[2]}"], capture_output=True)
        timed(argv, cwd)
    return time.perf_counter() - start


def build_app(root: Path) -> Path:
    app = sample_app.build(root, None, None)
    server, client = app / "app/server", app / "app/client"
    text = (server / "pyproject.toml").read_text().replace("dependencies = []", 'dependencies = ["six"]')
    (server / "pyproject.toml").write_text(text)
    (client / "package.json").write_text(json.dumps({"name": "client", "private": True,
                                                     "dependencies": {"is-number": "7.0.0"}}))
    env = {k: v for k, v in ENV.items() if k != "VIRTUAL_ENV"}
    subprocess.run([find_tool("uv"), "lock", "-q"], cwd=server, check=True, env=env)
    subprocess.run([find_tool("bun"), "install", "--silent"], cwd=client, check=True, env=env)
    (app / ".gitignore").write_text((app / ".gitignore").read_text() + "/plain/\n")
    for cmd in (["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "deps"],
                ["push", "-q", "origin", "main"]):
        subprocess.run(["git", "-C", str(app), *cmd], check=True, capture_output=True)
    # Warm the caches once, as the goals assume.
    timed(["bash", str(root / "plain.sh"), "warm", "0", str(app)], app)
    return app


def reset(app: Path) -> None:
    """Remove every worktree between runs (not timed)."""
    subprocess.run([INV, "-r", str(GROVE), "teardown", "--all", "--quiet"], cwd=app, env=ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for path in (app / "plain").glob("*") if (app / "plain").exists() else []:
        subprocess.run(["git", "-C", str(app), "worktree", "remove", "--force", str(path)], check=True)
    out = subprocess.run(["git", "-C", str(app), "for-each-ref", "--format=%(refname:short)", "refs/heads/plain/",
                          "refs/heads/adw/"], capture_output=True, text=True).stdout.split()
    if out:
        subprocess.run(["git", "-C", str(app), "branch", "-q", "-D", *out], check=True)
    shutil.rmtree(app / "agents" / ".archive", ignore_errors=True)


def main() -> int:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    if FIXTURES.exists():
        shutil.rmtree(FIXTURES)
    FIXTURES.mkdir(parents=True)
    (FIXTURES / "plain.sh").write_text(SCRIPT)
    empty = FIXTURES / "empty"
    empty.mkdir()
    (empty / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n")
    print("» building fixtures (sample app with real uv and bun dependencies, warm caches)", flush=True)
    app = build_app(FIXTURES)
    script = ["bash", str(FIXTURES / "plain.sh")]
    grove = [INV, "-r", str(GROVE)]
    m: dict[str, list[float]] = {k: [] for k in (
        "bare_inv", "inv_list", "script", "setup", "api", "script_x10", "setup_x10", "one_noinstall",
        "thirty_noinstall", "thirty_bare_inv", "list_100")}
    from grove import worktree_manager

    for run in range(runs):
        print(f"» run {run + 1}/{runs}", flush=True)
        m["bare_inv"].append(timed([INV, "-r", str(empty), "noop"], app))
        m["inv_list"].append(timed([*grove, "--list"], app))
        m["script"].append(timed([*script, f"s{run}", "1", str(app)], app))
        m["setup"].append(timed([*grove, "setup", "--adw-id", f"g{run}", "--quiet"], app))
        start = time.perf_counter()
        os.environ.update(ENV)
        worktree_manager.create_worktree_for_agent("BENCH", f"api {run}", project_root=app, adw_id=f"api{run}")
        m["api"].append(time.perf_counter() - start)
        reset(app)
        start = time.perf_counter()
        subprocess.run(["git", "fetch", "-q", "origin", "main"], cwd=app, check=True)
        m["script_x10"].append(time.perf_counter() - start + parallel(
            [[*script, f"p{run}-{i}", str(10 + i), str(app), "nofetch"] for i in range(10)], app, retry=True))
        ten = [a for i in range(10) for a in ("--adw-id", f"t{run}-{i}")]
        m["setup_x10"].append(timed([*grove, "setup", *ten, "--quiet"], app))
        reset(app)
        m["one_noinstall"].append(timed([*grove, "setup", "--adw-id", f"one{run}", "--no-install", "--quiet"], app))
        reset(app)
        m["thirty_bare_inv"].append(parallel([[INV, "-r", str(empty), "noop"]] * 30, app))
        m["thirty_noinstall"].append(parallel([[*grove, "setup", "--adw-id", f"c{run}-{i}", "--no-install",
                                                "--quiet"] for i in range(30)], app))
        reset(app)
    hundred = [a for i in range(100) for a in ("--adw-id", f"h{i:03d}")]
    subprocess.run([*grove, "setup", *hundred, "--no-install", "--no-db", "--quiet"], cwd=app, env=ENV, check=True)
    m["list_100"] = [timed([*grove, "list", "--json"], app) for _ in range(runs)]
    reset(app)
    subprocess.run([*grove, "setup", "--adw-id", "d0", "--adw-id", "d1", "--adw-id", "d2", "--quiet"], cwd=app,
                   env=ENV, check=True)
    disk = _disk(app / "trees", ["d0", "d1", "d2"])
    reset(app)
    postgres = bench_postgres.measure(runs=max(runs, 5))
    med = {k: statistics.median(v) for k, v in m.items()}
    rows = [
        ("full setup: inv setup / script", med["setup"], med["script"], med["setup"] / med["script"],
         f"<= (script + bare inv + 0.05s) / script = {(med['script'] + med['bare_inv'] + 0.05) / med['script']:.2f}",
         med["setup"] <= med["script"] + med["bare_inv"] + 0.05),
        ("10 at once: one inv setup / 10 scripts", med["setup_x10"], med["script_x10"],
         med["setup_x10"] / med["script_x10"], "<= 1.2", med["setup_x10"] <= 1.2 * med["script_x10"]),
        ("API create_worktree_for_agent / script", med["api"], med["script"], med["api"] / med["script"], "<= 1.3",
         med["api"] <= 1.3 * med["script"]),
        ("inv --list / bare inv", med["inv_list"], med["bare_inv"], med["inv_list"] / med["bare_inv"], "<= 1.5",
         med["inv_list"] <= 1.5 * med["bare_inv"]),
        ("30 concurrent --no-install / one", med["thirty_noinstall"], med["one_noinstall"],
         med["thirty_noinstall"] / med["one_noinstall"], "<= 3", med["thirty_noinstall"] <= 3 * med["one_noinstall"]),
        ("30 bare `inv noop` in parallel / one (the floor)", med["thirty_bare_inv"], med["bare_inv"],
         med["thirty_bare_inv"] / med["bare_inv"], "(reference)", True),
        ("inv list --json, 100 worktrees", med["list_100"], 0.3, med["list_100"] / 0.3, "< 0.3 s",
         med["list_100"] < 0.3),
        ("disk: each extra worktree's deps / first's", disk["extra_each"], disk["first"], disk["ratio"], "< 5%",
         disk["ratio"] < 0.05),
        *bench_postgres.rows(postgres),
    ]
    print(f"\n{'measurement':<44} {'grove':>9} {'baseline':>9} {'ratio':>7}  goal")
    for name, value, base, ratio, goal, ok in rows:
        print(f"{name:<44} {value:>9.3f} {base:>9.3f} {ratio:>7.2f}  {goal}  {'met' if ok else 'MISSED'}")
    print(f"(bare inv start-up {med['bare_inv']:.3f}s; medians of {runs} runs; disk in KiB; plain scripts that "
          f"failed in parallel and were rerun: {sum(BASELINE_FAILURES)} of {10 * runs})")
    results = {"runs": runs, "medians_seconds": med, "postgres": postgres, "baseline_parallel_failures": BASELINE_FAILURES, "samples": m, "disk_kib": disk,
               "rows": [{"name": r[0], "value": r[1], "baseline": r[2], "ratio": r[3], "goal": r[4], "met": r[5]}
                        for r in rows],
               "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    (GROVE / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("wrote bench/results.json")
    shutil.rmtree(FIXTURES)
    return 0


def _disk(trees: Path, ids: list[str]) -> dict:
    """du counts a hardlinked file once: the extra worktrees' cost is what they add beyond the first."""
    def du(*paths) -> int:
        out = subprocess.run(["du", "-sk", "-c", *map(str, paths)], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().split("\n")[-1].split()[0])

    deps = lambda i: [trees / i / "app/server/.venv", trees / i / "app/client/node_modules"]
    first = du(*deps(ids[0]))
    total = du(*[p for i in ids for p in deps(i)])
    extra_each = (total - first) / (len(ids) - 1)
    return {"first": first, "total": total, "extra_each": extra_each, "ratio": extra_each / first if first else 0}


if __name__ == "__main__":
    raise SystemExit(main())
