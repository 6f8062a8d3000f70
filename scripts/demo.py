"""`make demo`: the whole story on a sample app, in a few seconds.

1. three agents are set up at once, each isolated (worktree, branch, ports, env, deps, database);
2. `grove exec` runs a scripted "agent" (scripts/demo_agent.py) in each: it starts its dev server on
   its own port, edits code and commits; two changes are clean, one conflicts with another;
3. `grove merge --all --validate ...` merges two and marks the conflict;
4. the conflicted agent syncs with the base, fixes the conflict, and is merged;
5. `grove teardown --all` leaves nothing: no worktree, branch, port claim or running server.
Everything happens in .demo/ (git-ignored) and is removed at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

GROVE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(GROVE / "lib"))
sys.path.insert(0, str(GROVE / "scripts"))

import sample_app  # noqa: E402

from grove.core import portable  # noqa: E402
from grove.resources.deps import find_tool  # noqa: E402

# The command a user runs (issue 21): the stage titles and every message say `grove`.
INV = [str(Path(sys.executable).parent / "grove")]
IDS = ["demo-a", "demo-b", "demo-c"]
AGENT = ["python3", str(GROVE / "scripts" / "demo_agent.py")]
VALIDATE = "python3 -m py_compile app/server/server.py"


def inv_json(app: Path, *args: str, ok: tuple[int, ...] = (0,)) -> dict:
    """Run a grove task with --json; progress on stderr is kept quiet so each stage is one line and a table."""
    args = (*args[:args.index("--")], "--json", *args[args.index("--"):]) if "--" in args else (*args, "--json")
    out = subprocess.run([*INV, *args], cwd=app, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if out.returncode not in ok:
        raise SystemExit(f"demo: inv {' '.join(args)} exited {out.returncode}\n{out.stderr}")
    return json.loads(out.stdout)


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], check=check, text=True, capture_output=True)


def stage(n: int, command: str, why: str) -> None:
    print(f"\n{n}/5 » {command}\n      {why}")


def table(header: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("      " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def sync_with_base(app: Path, adw_id: str) -> list[str]:
    """`grove sync`: the base into the agent's branch, in its worktree; returns the conflicted files
    (the merge stays open there, status `conflict`, for the agent to resolve)."""
    return inv_json(app, "sync", "--adw-id", adw_id, ok=(0, 1))["conflict_files"]


def merge_rows(summary: dict) -> list[tuple]:
    return [(r["adw_id"], r["outcome"], (r.get("merged_commit") or "")[:10] or "-", r["reason"] or "")
            for r in summary["results"]]


def main() -> int:
    root = GROVE / ".demo"
    if root.exists():
        shutil.rmtree(root)
    try:
        return story(root)
    finally:  # on any failure, stop what the agents started and remove what was built
        app = root / "app"
        if (app / "trees").exists():
            subprocess.run([*INV, "teardown", "--all", "--quiet"], cwd=app, stdout=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


def story(root: Path) -> int:
    began = time.monotonic()
    print("Grove gives each coding agent its own worktree, branch, ports, env, dependencies and database,\n"
          "then merges their work back one branch at a time. A sample app (uv server, bun client, sqlite)\n"
          "with a bare origin is being built in .demo/ ...")
    app = sample_app.build(root, find_tool("uv"), find_tool("bun"))
    git(app, "config", "user.name", "Demo Agent")  # the agents' commits and the merge commits
    git(app, "config", "user.email", "agent@grove.invalid")

    stage(1, f"grove setup {' '.join('--adw-id ' + i for i in IDS)}",
          "three agents at once: each gets trees/<id>, branch adw/<id>, its own ports, .env, deps and database")
    start = time.monotonic()
    agents = {s["adw_id"]: s for s in inv_json(app, "setup", *[a for i in IDS for a in ("--adw-id", i)])["agents"]}
    table(("ADW_ID", "BRANCH", "BACKEND_PORT", "FRONTEND_PORT", "WORKTREE"),
          [(i, agents[i]["branch"], agents[i]["backend_port"], agents[i]["frontend_port"],
            Path(agents[i]["worktree_path"]).relative_to(app)) for i in IDS])
    print(f"      ({time.monotonic() - start:.1f}s for all three, installs included)")

    stage(2, "grove exec --all -- python3 scripts/demo_agent.py",
          "a scripted agent in each worktree starts its dev server on its own port, edits code, commits")
    ran = inv_json(app, "exec", "--all", "--", *AGENT)
    results = {r["adw_id"]: r for r in ran["results"]}
    rows = []
    for i in IDS:
        log = Path(results[i]["log"]).read_text().splitlines()
        served = next((line.split(" answers ")[0].split()[-1] for line in log if " answers " in line), "?")
        answered = next((line.split("adw_id=")[-1] for line in log if "adw_id=" in line), "?")
        rows.append((i, results[i]["exit_code"], f"{results[i]['seconds']:.1f}s",
                     f"{served} -> {answered}", git(app, "log", "-1", "--format=%s", agents[i]["branch"]).stdout.strip()))
    table(("ADW_ID", "EXIT", "TOOK", "ITS SERVER ANSWERS", "COMMIT"), rows)

    stage(3, f'grove merge --all --validate "{VALIDATE}"',
          "each branch is merged and validated in Grove's own integration worktree, one at a time")
    summary = inv_json(app, "merge", "--all", "--validate", VALIDATE, ok=(0, 1))
    table(("ADW_ID", "OUTCOME", "COMMIT", "WHY"), merge_rows(summary))

    conflicted = [r["adw_id"] for r in summary["results"] if r["outcome"] == "conflict"]
    if conflicted != ["demo-c"]:
        raise SystemExit(f"demo: expected demo-c to conflict, got {summary['results']}")
    files = sync_with_base(app, "demo-c")
    stage(4, "demo-c syncs with main (grove sync), its agent fixes the conflict (grove exec ... --resolve), grove merge again",
          f"syncing brought the conflict into its own worktree ({', '.join(files)}), never into main")
    inv_json(app, "exec", "--adw-id", "demo-c", "--", *AGENT, "--resolve")
    sync_with_base(app, "demo-c")  # up to date now; puts Grove's repointed configs back in place
    again = inv_json(app, "merge", "--adw-id", "demo-c", "--validate", VALIDATE)
    table(("ADW_ID", "OUTCOME", "COMMIT", "WHY"), merge_rows(again))
    served = (app / "app/server/server.py").read_text()
    both = '"api": 2' in served and '"database": DB' in served
    print(f"      main now has both changes to the server: {'yes' if both else 'NO'}")

    stage(5, "grove teardown --all", "worktrees removed, merged branches deleted, ports freed, leftover servers stopped")
    torn = inv_json(app, "teardown", "--all")
    table(("ADW_ID", "WORKTREE", "BRANCH", "STOPPED"),
          [(t["adw_id"], "removed", t["branch_action"],
            ", ".join(f"{p['name']} (pid {p['pid']})" for p in t["stopped_processes"]) or "-")
           for t in torn["torn_down"]])
    agent_trees = [p for p in (app / "trees").iterdir() if not p.name.startswith(".")]  # .grove-merge is Grove's
    left = {
        "agent worktrees": len(agent_trees),
        "adw/* branches": len(git(app, "branch", "--list", "adw/*").stdout.split()),
        "port leases": len(inv_json(app, "ports.show")),  # this repo's, in the machine-wide registry (issue 23)
        "processes": len(portable.inside(app / "trees", portable.process_backend())),
    }
    print(f"\nleft behind: {', '.join(f'{v} {k}' for k, v in left.items())}, {len(torn['kept'])} kept "
          f"(Grove keeps its merge worktree trees/.grove-merge, logs and archived states in agents/).\n"
          f"The whole story took {time.monotonic() - began:.1f}s.")
    return 0 if both and not any(left.values()) and not torn["kept"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
