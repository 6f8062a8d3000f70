"""Measure `inv conflicts` on 30 completed branches (issue 13): cold, warm, and after one branch moved.

Usage: .venv/bin/python scripts/bench_conflicts.py [--branches 30] [--runs 3]
Builds its fixtures under bench/fixtures/ (a repo of 200 files with a bare origin; each branch edits
its own file, every third one also edits one of five shared files, so some pairs really conflict).
Two shapes: "typical" (as said: most pairs touch disjoint files and are skipped) and "worst" (every
branch also edits its own lines of one common file: every pair overlaps, none conflicts, so every
pair goes through git merge-tree). Prints one JSON document: medians of wall time (the `inv`
process) and of Grove's own `seconds`.
"""

from __future__ import annotations

import argparse
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
INV = [str(Path(sys.executable).parent / "inv"), "-r", str(GROVE)]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(cwd: Path, name: str, text: str) -> None:
    (cwd / name).parent.mkdir(parents=True, exist_ok=True)
    (cwd / name).write_text(text)
    git(cwd, "add", "--", name)
    git(cwd, "commit", "-q", "-m", f"edit {name}")


def fixture(root: Path, branches: int, worst: bool) -> Path:
    from grove.ops import chain
    from grove.core import config, state
    from grove.core.report import Reporter

    shutil.rmtree(root, ignore_errors=True)
    app = root / "app"
    (app / "src").mkdir(parents=True)
    for i in range(200):
        (app / "src" / f"module_{i:03}.py").write_text("".join(f"line {n}\n" for n in range(40)))
    (app / "src" / "common.py").write_text("".join(f"line {n}\n" for n in range(8 * branches)))
    (app / ".gitignore").write_text("/trees/\n/agents/\n.ports.env\n")
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "fixture")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], check=True)
    git(app, "remote", "add", "origin", str(root / "origin.git"))
    git(app, "push", "-q", "origin", "main")
    settings = config.load({"repo": app, "port_slots": branches + 5})
    for i in range(branches):
        adw_id = f"b{i:02}"
        chain.setup(settings, chain.Request(adw_id, install=False, db=False), Reporter(quiet=True))
        wt = app / "trees" / adw_id
        commit(wt, f"src/own_{i:02}.py", f"branch {i}\n")
        if i % 3 == 0:
            shared = app / "src" / f"module_{i % 5:03}.py"
            commit(wt, f"src/module_{i % 5:03}.py", shared.read_text().replace("line 7\n", f"line 7 by {i}\n"))
        if worst:  # lines 8 apart: the edits overlap by file but merge cleanly
            common = app / "src" / "common.py"
            commit(wt, "src/common.py", common.read_text().replace(f"line {8 * i}\n", f"line {8 * i} by {i}\n"))
        state.set_status(settings, adw_id, "completed")
    return app


def forecast(app: Path, env: dict) -> tuple[float, dict]:
    began = time.perf_counter()
    out = subprocess.run([*INV, "conflicts", "--json"], cwd=app, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - began, json.loads(out.stdout)


def measure(root: Path, args, env: dict, worst: bool) -> dict:
    app = fixture(root, args.branches, worst)
    cache = app / "agents/.grove/conflicts.json"
    samples: dict[str, list] = {"cold": [], "warm": [], "one_moved": []}
    for run in range(args.runs):
        cache.unlink(missing_ok=True)
        samples["cold"].append(forecast(app, env))
        samples["warm"].append(forecast(app, env))
        commit(app / "trees" / "b00", "src/own_00.py", f"run {run}\n")  # b00 moves: only its pairs again
        samples["one_moved"].append(forecast(app, env))
    last = samples["cold"][-1][1]
    return {
        "conflicting_pairs": len(last["pairs"]), "cold_checked": last["checked"],
        "cold_skipped_disjoint": last["skipped_disjoint"], "one_moved_checked": samples["one_moved"][-1][1]["checked"],
        **{f"{kind}_wall_seconds": round(statistics.median(s[0] for s in runs), 3) for kind, runs in samples.items()},
        **{f"{kind}_grove_seconds": round(statistics.median(s[1]["seconds"] for s in runs), 3)
           for kind, runs in samples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--branches", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADW_", "GIT_DIR", "GIT_WORK_TREE"))}
    env["ADW_PORT_SLOTS"] = str(args.branches + 5)
    report: dict = {"branches": args.branches, "pairs": args.branches * (args.branches - 1) // 2, "runs": args.runs}
    bare = []
    for _ in range(args.runs):
        began = time.perf_counter()
        subprocess.run([*INV, "--list"], cwd=GROVE, env=env, capture_output=True, check=True)
        bare.append(time.perf_counter() - began)
    report["inv_list_seconds"] = round(statistics.median(bare), 3)
    for shape in ("typical", "worst"):
        report[shape] = measure(GROVE / "bench" / "fixtures" / f"conflicts-{shape}", args, env, shape == "worst")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
