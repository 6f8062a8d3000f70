"""`make bench`: Grove against the bare commands it wraps, measured side by side in one run.

Builds its own fixtures under bench/fixtures/ (git-ignored), each a seed-shaped sample app with a
bare origin and warm uv and bun caches:

- **seed**: one real dependency on each side (`six`, `is-number`): Grove's own overhead shows;
- **heavy**: both installs take real time: the server is a package (FastAPI stack; hatchling builds
  it and uv installs it editable at every sync), the client has Vite, React and TypeScript with a
  `postinstall` that compiles the API client, as codegen steps do: parallel installs;
- **slow seed**: the seed app whose database reset seeds 800,000 rows (about a second): the warm pool.

The Postgres rows (a database per agent, cloned from a ~50 MB template) come from
scripts/bench_postgres.py, on a throwaway server of its own (`--only pg`).

Every measurement runs interleaved with its baseline (A B A B ...), several times; the table shows
each side's median and the median of the paired ratios (or differences), A_i against the B_i
measured next to it; bench/results.json keeps every sample. Grove's own modules are byte-compiled
first, as an installed package's are (PYTHONDONTWRITEBYTECODE is dropped for the runs).
Not a timed test: machines are noisy.

    python scripts/bench.py [--runs N] [--only lean,heavy,pool,many,list,disk,pg,leases]
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

import bench_leases  # noqa: E402
import bench_postgres  # noqa: E402
import sample_app  # noqa: E402

from grove.resources.deps import find_tool  # noqa: E402

FIXTURES = GROVE / "bench" / "fixtures"
INV = str(Path(sys.executable).parent / "inv")
GROVE_CMD = str(Path(sys.executable).parent / "grove")  # the console script `pip install` gives
TAKES = 5  # pooled `grove setup`s per run, each next to a bare `inv`: the take's row is a difference of a few ms
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")
       and not k.startswith(("ADW_", "GROVE_"))}
ENV.update(ADW_PORT_SLOTS="120", ADW_BACKEND_PORT_BASE="30000", ADW_FRONTEND_PORT_BASE="31000",
           UV_LINK_MODE="hardlink",
           # The bench refreshes the pool itself, off the clock: a background refresh started by a
           # timed setup would compete with the next measurement (and outlive the fixtures).
           ADW_POOL_REFRESH="off",
           # The bench's own machine-wide lease registry (issue 23), never the user's.
           ADW_PORT_REGISTRY=str(FIXTURES / "ports.json"))
for tool in ("uv", "bun"):  # the plain script finds the same tools Grove does
    found = find_tool(tool)
    if found and str(Path(found).parent) not in ENV["PATH"].split(os.pathsep):
        ENV["PATH"] = str(Path(found).parent) + os.pathsep + ENV["PATH"]

# The seed's steps as a plain shell script: the baseline Grove is measured against.
SCRIPT = r"""#!/usr/bin/env bash
set -euo pipefail
id=$1; slot=$2; cd "$3"
# Parallel copies of this script fetch once beforehand and take turns at `worktree add`: parallel
# fetches race, and so do adds (one reads another's half-made .git/worktrees entry: DESIGN.md pitfalls).
if [ "${4:-}" = nofetch ]; then
  turns=(); command -v flock >/dev/null && turns=(flock .git/plain-add.lock)  # no flock (macOS): reruns count
  ${turns[@]+"${turns[@]}"} git worktree add -q --no-track -b "plain/$id" "plain/$id" origin/main
else
  git fetch -q origin main
  git worktree add -q --no-track -b "plain/$id" "plain/$id" origin/main
fi
wt="plain/$id"
printf 'BACKEND_PORT=%s\nFRONTEND_PORT=%s\nVITE_BACKEND_URL=http://localhost:%s\n' \
  $((9500+slot)) $((9600+slot)) $((9500+slot)) > "$wt/.ports.env"
cp .env "$wt/.env"; cat "$wt/.ports.env" >> "$wt/.env"
cp app/server/.env.sample "$wt/app/server/.env"; cat "$wt/.ports.env" >> "$wt/app/server/.env"
sed -i "s#\./#$PWD/$wt/#g" "$wt/.mcp.json" "$wt/playwright-mcp-config.json"
[ "${5:-}" = noinstall ] && exit 0
# nodeps: git, files and the db reset, no installs (the install-free many-at-once row, issue 24)
[ "${5:-}" = nodeps ] && { (cd "$wt" && BACKEND_PORT=$((9500+slot)) ./scripts/reset_db.sh); exit 0; }
(cd "$wt/app/server" && uv sync --all-extras -q)
(cd "$wt/app/client" && bun install --silent)
(cd "$wt" && BACKEND_PORT=$((9500+slot)) ./scripts/reset_db.sh)
"""

SLOW_SEED = r'''#!/usr/bin/env bash
# Seeds 800,000 rows into a fresh sqlite database: about a second, like a real seed.
set -euo pipefail
db="${DB_PATH:-app/server/app.db}"
rm -f "$db"
python3 - "$db" <<'PY'
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("create table items (id integer primary key, name text, price real, note text)")
conn.executemany("insert into items (name, price, note) values (?, ?, ?)",
                 ((f"item {i}", i * 0.5, "x" * 40) for i in range(800_000)))
conn.execute("create index items_name on items(name)")
conn.commit()
PY
'''


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
    if retry:
        BASELINE_FAILURES.append(len(failed))
    for argv in failed:
        subprocess.run(["git", "-C", str(cwd), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(cwd), "branch", "-q", "-D", f"plain/{argv[2]}"], capture_output=True)
        shutil.rmtree(Path(cwd) / "plain" / argv[2], ignore_errors=True)
        timed(argv, cwd)
    return time.perf_counter() - start


def _rev(app: Path, rev: str) -> str:
    return subprocess.run(["git", "-C", str(app), "rev-parse", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def _git(app: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(app), *args], check=True, capture_output=True)


def _commit(app: Path, message: str) -> None:
    (app / ".gitignore").write_text((app / ".gitignore").read_text().replace("/plain/\n", "") + "/plain/\n")
    _git(app, "add", "-A")
    _git(app, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", message)
    _git(app, "push", "-q", "origin", "main")


def build_app(root: Path, kind: str) -> Path:
    app = sample_app.build(root, None, None)
    server, client = app / "app/server", app / "app/client"
    env = {k: v for k, v in ENV.items() if k != "VIRTUAL_ENV"}
    if kind == "heavy":
        py_deps = '["fastapi", "uvicorn", "sqlalchemy", "httpx", "rich"]'
        js = {"name": "client", "private": True, "scripts": {"postinstall": "tsc -p tsconfig.json"},
              "dependencies": {"react": "18.3.1", "react-dom": "18.3.1", "axios": "1.7.9"},
              "devDependencies": {"vite": "6.0.7", "typescript": "5.7.2", "@vitejs/plugin-react": "4.3.4"}}
        (client / "src").mkdir()
        (client / "src/api.ts").write_text("export const api = (n: number): string => `item ${n}`;\n")
        (client / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
            "strict": True, "outDir": "gen", "target": "es2020", "module": "es2020", "types": [],
            "skipLibCheck": True}, "include": ["src"]}))
        (app / ".gitignore").write_text((app / ".gitignore").read_text() + "gen/\n")
    else:
        py_deps = '["six"]'
        js = {"name": "client", "private": True, "dependencies": {"is-number": "7.0.0"}}
    text = (server / "pyproject.toml").read_text().replace("dependencies = []", f"dependencies = {py_deps}")
    if kind == "heavy":  # the server is a package: uv builds and installs it (editable) at every sync
        text += '\n[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        (server / "src/server").mkdir(parents=True)
        (server / "src/server/__init__.py").write_text('"""The sample server as a package."""\n')
    (server / "pyproject.toml").write_text(text)
    (client / "package.json").write_text(json.dumps(js))
    if kind == "slow":
        (app / "scripts/reset_db.sh").write_text(SLOW_SEED)
    uv, bun = find_tool("uv"), find_tool("bun")
    assert uv and bun, "make bench needs uv and bun (`make tools` brings them)"
    subprocess.run([uv, "lock", "-q"], cwd=server, check=True, env=env)
    subprocess.run([bun, "install", "--silent"], cwd=client, check=True, env=env, stdout=subprocess.DEVNULL)
    _commit(app, "deps")
    # Warm the caches once, as the goals assume.
    timed(["bash", str(root.parent / "plain.sh"), "warm", "0", str(app)], app)
    return app


def reset(app: Path) -> None:
    """Remove every worktree between runs (not timed; in this process, with Grove's own teardown).
    Pool entries stay; the pool rows fill the pool again before they measure."""
    from grove.ops import cleanup
    from grove.core import config, state

    os.environ.update(ENV)
    settings = config.load({"repo": app})
    for adw_id in state.all_ids(settings):
        cleanup.teardown(settings, adw_id, delete_branch=True, force=True)
    for path in (app / "plain").glob("*") if (app / "plain").exists() else []:
        subprocess.run(["git", "-C", str(app), "worktree", "remove", "--force", str(path)], check=True)
    out = subprocess.run(["git", "-C", str(app), "for-each-ref", "--format=%(refname:short)", "refs/heads/plain/",
                          "refs/heads/adw/", "refs/heads/feature/"], capture_output=True, text=True).stdout.split()
    if out:
        subprocess.run(["git", "-C", str(app), "branch", "-q", "-D", *out], check=True)
    shutil.rmtree(app / "agents" / ".archive", ignore_errors=True)


def fill_pool(app: Path, size: int) -> None:
    subprocess.run([INV, "-r", str(GROVE), "pool", "--size", str(size), "--quiet"], cwd=app, env=ENV, check=True,
                   stdout=subprocess.DEVNULL)


def api_create(app: Path, name: str) -> float:
    """The Python API in this process (an orchestrator has Grove imported already)."""
    from grove import worktree_manager

    os.environ.update(ENV)
    start = time.perf_counter()
    meta = worktree_manager.create_worktree_for_agent("BENCH", name, project_root=app, adw_id=name)
    elapsed = time.perf_counter() - start
    assert meta.from_pool, "the bench's pooled API create did not come from the pool"
    return elapsed


def main() -> int:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    only = set(sys.argv[sys.argv.index("--only") + 1].split(",")) if "--only" in sys.argv else None
    want = lambda name: only is None or name in only  # noqa: E731
    if FIXTURES.exists():
        shutil.rmtree(FIXTURES)
    FIXTURES.mkdir(parents=True)
    (FIXTURES / "plain.sh").write_text(SCRIPT)
    empty = FIXTURES / "empty"
    empty.mkdir()
    (empty / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(GROVE / "lib")], check=True,
                   stdout=subprocess.DEVNULL)
    # Issue 23: 50 agents across 3 repositories, machine-wide leases; plain repos, no installs;
    # then the same from a warm pool in each (issue 24, §4).
    leases = [bench_leases.measure(FIXTURES, [INV, "-r", str(GROVE)], ENV, pooled=pooled)
              for pooled in (False, True)] if want("leases") else None
    print("» building fixtures (sample apps with real uv and bun dependencies, warm caches)", flush=True)
    app = build_app(FIXTURES / "seed", "seed") if only != {"leases"} else FIXTURES / "none"
    heavy = build_app(FIXTURES / "heavy", "heavy") if want("heavy") else None
    slow = build_app(FIXTURES / "slow", "slow") if want("pool") else None
    script = ["bash", str(FIXTURES / "plain.sh")]
    grove = [INV, "-r", str(GROVE)]
    m: dict[str, list[float]] = {}
    add = lambda key, value: m.setdefault(key, []).append(value)  # noqa: E731

    for run in range(runs):
        print(f"» run {run + 1}/{runs}", flush=True)
        for rep in range(3 if want("lean") else 0):  # small and noisy: three A B rounds per run
            add("bare_inv", timed([INV, "-r", str(empty), "noop"], app))
            add("inv_list", timed([*grove, "--list"], app))
            add("git_fetch", timed(["git", "fetch", "-q", "origin", "main"], app))
            add("script", timed([*script, f"s{run}-{rep}", "1", str(app)], app))
            add("setup", timed([*grove, "setup", "--adw-id", f"g{run}-{rep}", "--quiet"], app))
            add("script_files", timed([*script, f"sf{run}-{rep}", "2", str(app), "", "noinstall"], app))
            add("setup_files", timed([*grove, "setup", "--adw-id", f"gf{run}-{rep}", "--no-install", "--no-db",
                                      "--quiet"], app))
            reset(app)
        if heavy is not None:
            add("heavy_script", timed([*script, f"hs{run}", "1", str(heavy)], heavy))
            add("heavy_setup", timed([*grove, "setup", "--adw-id", f"hg{run}", "--quiet"], heavy))
            reset(heavy)
        if slow is not None:
            fill_pool(slow, 2)
            add("slow_script", timed([*script, f"ps{run}", "1", str(slow)], slow))
            add("pool_setup", timed([*grove, "setup", "--adw-id", f"pg{run}", "--quiet"], slow))
            add("pool_api", api_create(slow, f"pa{run}"))
            add("slow_setup", timed([*grove, "setup", "--adw-id", f"pn{run}", "--no-pool", "--quiet"], slow))
            reset(slow)
            # Issue 24 §2: the take itself, as users run it (`grove setup`), at the newest base, against
            # Invoke's bare start-up measured next to each one.
            fill_pool(slow, TAKES)
            for rep in range(TAKES):
                add("take_bare_inv", timed([INV, "-r", str(empty), "noop"], slow))
                add("take_setup", timed([GROVE_CMD, "setup", "--adw-id", f"tk{run}-{rep}", "--quiet"], slow))
                state = json.loads((slow / "agents" / f"tk{run}-{rep}" / "adw_state.json").read_text())
                assert state["from_pool"] and state["base_commit"] == _rev(slow, "origin/main"), "a take not at the newest base"
            reset(slow)
            # Main moves between setups, as merges make it; the pool refreshes in between, off the
            # clock, as `grove pool`/ADW_POOL_REFRESH=auto do after a merge (issue 24).
            fill_pool(slow, 3)
            for rep in range(2):
                (slow / "README.md").write_text(f"main moved: run {run}, merge {rep}\n")
                _commit(slow, f"a merge lands ({run}.{rep})")
                fill_pool(slow, 3)
                add("moving_script", timed([*script, f"ms{run}-{rep}", "1", str(slow)], slow))
                add("moving_setup", timed([*grove, "setup", "--adw-id", f"mg{run}-{rep}", "--quiet"], slow))
                add("moving_api", api_create(slow, f"ma{run}-{rep}"))
                reset(slow)
        if want("many"):
            subprocess.run(["git", "fetch", "-q", "origin", "main"], cwd=app, check=True)
            add("script_x10", parallel([[*script, f"p{run}-{i}", str(10 + i), str(app), "nofetch"]
                                        for i in range(10)], app, retry=True))
            ten = [a for i in range(10) for a in ("--adw-id", f"t{run}-{i}")]
            add("setup_x10", timed([*grove, "setup", *ten, "--quiet"], app))
            reset(app)
            add("thirty_bare_inv", parallel([[INV, "-r", str(empty), "noop"]] * 30, app))
            subprocess.run(["git", "fetch", "-q", "origin", "main"], cwd=app, check=True)
            add("thirty_scripts", parallel([[*script, f"c{run}-{i}", str(30 + i), str(app), "nofetch"]
                                            for i in range(30)], app, retry=True))
            reset(app)
            add("thirty_setups", parallel([[*grove, "setup", "--adw-id", f"c{run}-{i}", "--quiet"]
                                           for i in range(30)], app))
            reset(app)
            # Without installs (git, files, db reset): Grove's own work shows (issue 24).
            subprocess.run(["git", "fetch", "-q", "origin", "main"], cwd=app, check=True)
            add("thirty_scripts_nodeps", parallel([[*script, f"n{run}-{i}", str(30 + i), str(app), "nofetch", "nodeps"]
                                                   for i in range(30)], app, retry=True))
            reset(app)
            add("thirty_setups_nodeps", parallel([[*grove, "setup", "--adw-id", f"n{run}-{i}", "--no-install",
                                                   "--quiet"] for i in range(30)], app))
            reset(app)
    if want("list"):
        hundred = [a for i in range(100) for a in ("--adw-id", f"h{i:03d}")]
        subprocess.run([*grove, "setup", *hundred, "--no-install", "--no-db", "--quiet"], cwd=app, env=ENV, check=True)
        for _ in range(max(runs, 5)):
            add("list_100", timed([*grove, "list", "--json"], app))
            add("bare_inv_list", timed([INV, "-r", str(empty), "noop"], app))
        reset(app)
    disk = None
    if want("disk"):
        subprocess.run([*grove, "setup", "--adw-id", "d0", "--adw-id", "d1", "--adw-id", "d2", "--quiet"], cwd=app,
                       env=ENV, check=True)
        disk = _disk(app / "trees", ["d0", "d1", "d2"])
        reset(app)
    postgres = bench_postgres.measure(runs=max(runs, 5)) if want("pg") else None
    med = {k: statistics.median(v) for k, v in m.items()}
    rows = _rows(m, disk) + (bench_postgres.rows(postgres) if postgres else []) + \
        [row for r in leases or [] for row in bench_leases.rows(r)]
    print(f"\n{'measurement':<58} {'grove':>8} {'baseline':>8} {'paired':>7}  goal")
    for name, value, base, ratio, goal, ok in rows:
        print(f"{name:<58} {value:>8.3f} {base:>8.3f} {ratio:>7.3f}  {goal}  {'met' if ok else 'MISSED'}")
    print(f"(medians of {runs} runs; plain scripts that failed in parallel and were rerun: "
          f"{sum(BASELINE_FAILURES)})")
    results = {"runs": runs, "medians_seconds": med, "postgres": postgres, "leases": leases,
               "baseline_parallel_failures": BASELINE_FAILURES, "samples": m,
               "disk_kib": disk,
               "rows": [{"name": r[0], "median": r[1], "baseline_median": r[2], "paired": r[3], "goal": r[4],
                         "met": r[5]}
                        for r in rows],
               "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                           "load_before": os.getloadavg()[0]}}
    (GROVE / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("wrote bench/results.json")
    shutil.rmtree(FIXTURES)
    return 0


def _paired(m: dict, a: str, *base: str, diff: bool = False) -> float:
    """The median over runs of A_i / (B_i + ...) (or A_i - (B_i + ...)): each A is set against the
    baselines measured next to it, so load that hits one run hits both sides of its pair."""
    n = min(len(m[k]) for k in (a, *base))
    values = [m[a][i] - sum(m[b][i] for b in base) if diff else m[a][i] / sum(m[b][i] for b in base)
              for i in range(n)]
    return statistics.median(values)


def _rows(m: dict, disk: dict | None) -> list[tuple]:
    """(name, Grove's median, baseline's median, paired ratio or difference, target, met)."""
    med = {k: statistics.median(v) for k, v in m.items()}
    rows = []

    def row(name, a, bases, goal, limit, diff=False):
        value = _paired(m, a, *bases, diff=diff)
        rows.append((name, med[a], sum(med[b] for b in bases), value, goal, value <= limit))

    if "setup" in m:
        row("lean: inv setup - (script + bare inv) [s]", "setup", ("script", "bare_inv"), "<= 0.05 s", 0.05, True)
        row("lean: --no-install --no-db - (git+files script + bare inv)", "setup_files", ("script_files", "bare_inv"),
            "<= 0.05 s", 0.05, True)
        row("full setup: inv setup / script", "setup", ("script",), "(reported)", float("inf"))
        row("inv --list / bare inv (one-task file)", "inv_list", ("bare_inv",), "<= 1.1", 1.1)
    if "heavy_setup" in m:
        row("parallel installs: inv setup / script (heavy app)", "heavy_setup", ("heavy_script",), "< 1", 0.999)
    if "pool_setup" in m:
        row("pool: pooled inv setup / script (1 s seed)", "pool_setup", ("slow_script",), "<= 0.5", 0.5)
        row("pool: pooled API create / script (1 s seed)", "pool_api", ("slow_script",), "<= 0.2", 0.2)
        row("pool: inv setup --no-pool / script (1 s seed)", "slow_setup", ("slow_script",), "(reported)", float("inf"))
        row(f"the take: pooled grove setup - bare inv [s] ({TAKES} pairs a run)", "take_setup", ("take_bare_inv",),
            "<= 0.04 s", 0.04, True)
    if "moving_setup" in m:
        row("pool, main moving: pooled inv setup / script (1 s seed)", "moving_setup", ("moving_script",),
            "<= 0.5", 0.5)
        row("pool, main moving: pooled API create / script (1 s seed)", "moving_api", ("moving_script",),
            "<= 0.2", 0.2)
    if "setup_x10" in m:
        row("10 at once: one inv setup / 10 scripts", "setup_x10", ("script_x10",), "<= 1.2", 1.2)
        row("30 setups at once / (30 bare inv + 30 scripts)", "thirty_setups", ("thirty_bare_inv", "thirty_scripts"),
            "<= 1.3", 1.3)
        row("30 at once, no installs / (30 bare inv + 30 scripts)", "thirty_setups_nodeps",
            ("thirty_bare_inv", "thirty_scripts_nodeps"), "<= 1.3", 1.3)
    if "list_100" in m:
        rows.append(("inv list --json, 100 agents [s]", med["list_100"], 0.3, med["list_100"], "< 0.3 s",
                     med["list_100"] < 0.3))
        row("inv list --json, 100 agents / bare inv", "list_100", ("bare_inv_list",), "(reported)", float("inf"))
    if disk:
        rows.append(("disk: each extra worktree's deps / first's (KiB)", disk["extra_each"], disk["first"],
                     disk["ratio"], "(reported)", True))
    return rows


def _disk(trees: Path, ids: list[str]) -> dict:
    """du counts a hardlinked file once: the extra worktrees' cost is what they add beyond the first."""
    def du(*paths) -> int:
        out = subprocess.run(["du", "-sk", "-c", *map(str, paths)], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().split("\n")[-1].split()[0])

    deps = lambda i: [trees / i / "app/server/.venv", trees / i / "app/client/node_modules"]  # noqa: E731
    first = du(*deps(ids[0]))
    total = du(*[p for i in ids for p in deps(i)])
    extra_each = (total - first) / (len(ids) - 1)
    return {"first": first, "total": total, "extra_each": extra_each, "ratio": extra_each / first if first else 0}


if __name__ == "__main__":
    raise SystemExit(main())
