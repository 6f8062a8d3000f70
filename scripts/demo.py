"""`make demo`: three agents set up at once in a sample app, proven isolated, then torn down.

Builds the seed-shaped sample app in .demo/ (git-ignored) with a bare origin, runs one
`inv setup` for three ids, starts each worktree's backend on its own BACKEND_PORT (127.0.0.1),
asks each for its agent id and database, prints what it saw, stops the servers, tears down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

GROVE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(GROVE / "lib"))
sys.path.insert(0, str(GROVE / "scripts"))

import sample_app  # noqa: E402

from grove.deps import find_tool  # noqa: E402

INV = [str(Path(sys.executable).parent / "inv"), "-r", str(GROVE)]
IDS = ["demo-a", "demo-b", "demo-c"]


def inv(app: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*INV, *args], cwd=app, text=True, **kw)


def get(url: str, attempts: int = 50) -> dict:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return json.loads(answer.read())
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: no answer from {url}")


def main() -> int:
    root = GROVE / ".demo"
    if root.exists():
        shutil.rmtree(root)
    print("» building a sample app (uv server, bun client, sqlite) with a bare origin in .demo/")
    app = sample_app.build(root, find_tool("uv"), find_tool("bun"))
    print(f"» inv setup --adw-id {' --adw-id '.join(IDS)}   (one call, three agents at once)")
    start = time.monotonic()
    out = inv(app, "setup", *[a for i in IDS for a in ("--adw-id", i)], "--json", "--quiet",
              stdout=subprocess.PIPE)
    wall = time.monotonic() - start
    if out.returncode != 0:
        print(out.stdout)
        return out.returncode
    agents = sorted(json.loads(out.stdout)["agents"], key=lambda s: s["adw_id"])
    print(f"\n{'ADW_ID':<8} {'BRANCH':<12} {'BACKEND':>7} {'FRONTEND':>8} {'STATUS':<8} {'SETUP':>6}  PATH")
    for s in agents:
        seconds = sum(step["seconds"] for step in s["steps"].values())
        print(f"{s['adw_id']:<8} {s['branch']:<12} {s['backend_port']:>7} {s['frontend_port']:>8} "
              f"{s['status']:<8} {seconds:5.2f}s  {Path(s['worktree_path']).relative_to(GROVE)}")
    print(f"(all three in {wall:.2f}s wall time, Invoke start-up included)\n")
    servers = []
    try:
        for s in agents:
            python = str(Path(s["worktree_path"]) / "app/server/.venv/bin/python")
            servers.append(subprocess.Popen([*INV, "run", "--adw-id", s["adw_id"], "--", python,
                                             "app/server/server.py"], cwd=app))
        print(f"{'ADW_ID':<8} {'ASKED':<24} {'ANSWERED adw_id':<16} DATABASE")
        for s in agents:
            url = f"http://127.0.0.1:{s['backend_port']}/"
            seen = get(url)
            mark = "✓" if seen["adw_id"] == s["adw_id"] and seen["port"] == s["backend_port"] else "✗ NOT ISOLATED"
            print(f"{s['adw_id']:<8} {url:<24} {seen['adw_id']:<16} {Path(seen['db']).relative_to(GROVE)} {mark}")
            if mark != "✓":
                return 1
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)
    print("\n» inv teardown --all")
    inv(app, "teardown", "--all", "--quiet", stdout=subprocess.DEVNULL, check=True)
    left = [p.name for p in (app / "trees").iterdir()] if (app / "trees").exists() else []
    print(f"» worktrees left: {left or 'none'}; archived states: {len(list((app / 'agents/.archive').glob('*.json')))}")
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
