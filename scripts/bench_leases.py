"""`make bench`'s row for issue 23: 50 agents across 3 repositories on one machine, no configuration.

Three plain repositories (a bare origin each), one machine-wide lease registry of the bench's own
(ADW_PORT_REGISTRY under bench/fixtures/, never the user's), the default ports (no ADW_PORT_SLOTS,
no bases: 15 slots, then the overflow range). 50 `grove setup --adw-id X --no-install --no-db`
processes are started at once, round-robin over the repositories; each one's time to ready is
from its start to its exit. Then every lease is checked against every worktree's .ports.env.
With ``pooled`` (issue 24, §4), each repository's warm pool is filled first, off the clock, with
enough entries for its agents, and every agent must have come from it.

    python scripts/bench.py --only leases
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

AGENTS, REPOS = 50, 3


def _repo(root: Path, env: dict) -> Path:
    app = root / "app"
    app.mkdir(parents=True)
    git = lambda *a, cwd=app: subprocess.run(["git", "-C", str(cwd), *a], check=True, capture_output=True, env=env)  # noqa: E731
    git("init", "-q", "-b", "main")
    (app / ".gitignore").write_text("/trees/\n/agents/\n.ports.env\n")
    (app / "README.md").write_text("bench\n")
    git("add", "-A")
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "initial")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], check=True, env=env)
    git("remote", "add", "origin", str(root / "origin.git"))
    git("push", "-q", "origin", "main")
    return app


def measure(fixtures: Path, grove: list[str], base_env: dict, pooled: bool = False) -> dict:
    env = {k: v for k, v in base_env.items() if not k.startswith("ADW_")}
    root = fixtures / ("leases-pooled" if pooled else "leases")
    registry = root / "ports.json"
    env["ADW_PORT_REGISTRY"] = str(registry)
    env["ADW_POOL_REFRESH"] = "off"  # nothing in the background competes with the timed setups
    repos = [_repo(root / f"repo{n}", env) for n in range(REPOS)]
    if pooled:
        for app in repos:
            subprocess.run([*grove, "pool", "--size", str(-(-AGENTS // REPOS)), "--quiet"], cwd=app, env=env,
                           check=True, stdout=subprocess.DEVNULL)
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    procs: dict[str, subprocess.Popen] = {}
    for i in range(AGENTS):
        adw_id, app = f"agent{i:02d}", repos[i % REPOS]
        started[adw_id] = time.perf_counter()
        procs[adw_id] = subprocess.Popen([*grove, "setup", "--adw-id", adw_id, "--no-install", "--no-db", "--quiet"],
                                         cwd=app, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while len(ended) < AGENTS:
        for adw_id, p in procs.items():
            if adw_id not in ended and p.poll() is not None:
                ended[adw_id] = time.perf_counter()
        time.sleep(0.01)
    said = {a: p.communicate()[1].decode()[-300:] for a, p in procs.items()}  # reads and closes stderr
    failed = {a: text for a, text in said.items() if procs[a].returncode != 0}
    ready = sorted(ended[a] - started[a] for a in procs)
    leases = json.loads(registry.read_text())["leases"]
    sets = {tuple(sorted(lease["ports"].values())) for lease in leases}
    ports = [p for lease in leases for p in lease["ports"].values()]
    agree = all(f"BACKEND_PORT={lease['ports']['BACKEND_PORT']}\n" in
                (Path(lease["checkout"]) / "trees" / lease["adw_id"] / ".ports.env").read_text() for lease in leases)
    from_pool = sum(json.loads((Path(lease["checkout"]) / "agents" / lease["adw_id"] / "adw_state.json").read_text())
                    .get("from_pool", False) for lease in leases)
    return {"agents": AGENTS, "repos": REPOS, "pooled": pooled, "from_pool": from_pool, "failed": failed,
            "leases": len(leases), "distinct_sets": len(sets),
            "distinct_ports": len(set(ports)), "ports_env_agree": agree,
            "overflow": sum(1 for lease in leases if lease["slot"] >= 15),
            "ready_p50": statistics.median(ready), "ready_p95": ready[int(round(0.95 * (len(ready) - 1)))],
            "ready_max": ready[-1], "samples": ready}


def rows(r: dict) -> list[tuple]:
    """(name, value, baseline, paired, goal, met), as bench.py prints them."""
    ok = (not r["failed"] and r["leases"] == r["distinct_sets"] == AGENTS and r["distinct_ports"] == 2 * AGENTS
          and r["ports_env_agree"])
    if r["pooled"]:
        ok = ok and r["from_pool"] == AGENTS
        return [("leases, warm pool: 50 x 3 repos, distinct sets / agents", r["distinct_sets"], AGENTS,
                 r["distinct_sets"] / AGENTS, f"all distinct, all pooled ({r['from_pool']})", ok),
                ("leases, warm pool: time to ready p50 / p95 [s] (50 at once)", r["ready_p50"], r["ready_p95"],
                 r["ready_p95"] / r["ready_p50"], "(reported)", True)]
    return [("leases: 50 agents x 3 repos, distinct port sets / agents", r["distinct_sets"], AGENTS,
             r["distinct_sets"] / AGENTS, "all distinct", ok),
            ("leases: time to ready p50 / p95 [s] (50 at once)", r["ready_p50"], r["ready_p95"],
             r["ready_p95"] / r["ready_p50"], "(reported)", True)]
