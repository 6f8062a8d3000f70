"""Build a small app laid out like the seed, with a bare origin: for the demo, the bench and the tests.

    app/server   a uv project (pyproject.toml + uv.lock) with a stdlib HTTP server
    app/client   a bun project (package.json)
    scripts/reset_db.sh   creates a sqlite database inside the worktree
    .env.sample, app/server/.env.sample, .mcp.json, playwright-mcp-config.json

Usage: python scripts/sample_app.py DIR   (prints the checkout's path)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SERVER = '''"""The sample backend: answers with its agent id, port and database, so isolation is visible."""
import json, os, sqlite3
from http.server import BaseHTTPRequestHandler, HTTPServer

DB = os.path.abspath(os.environ.get("DB_PATH", "app/server/app.db"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with sqlite3.connect(DB) as conn:
            adw_id, port = conn.execute("select adw_id, backend_port from agent").fetchone()
        body = json.dumps({"adw_id": adw_id, "port": int(os.environ["BACKEND_PORT"]), "db": DB,
                           "db_port": port}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ["BACKEND_PORT"])), Handler).serve_forever()
'''

RESET_DB = '''#!/usr/bin/env bash
# Fresh sqlite database for this worktree, recording which agent and port it belongs to.
set -euo pipefail
db="${DB_PATH:-app/server/app.db}"
rm -f "$db"
python3 - "$db" <<'PY'
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("create table agent (adw_id text, backend_port integer)")
conn.execute("insert into agent values (?, ?)", (os.environ.get("ADW_ID", ""), int(os.environ["BACKEND_PORT"])))
conn.commit()
PY
'''

FILES = {
    ".gitignore": "/trees/\n/agents/\n.ports.env\n.env\nnode_modules/\n.venv/\n*.db\nvideos/\n",
    ".env.sample": "# Sample settings: copied into each worktree with its own ports laid over them.\n"
                   "APP_NAME=sample\nBACKEND_PORT=8000\nFRONTEND_PORT=5173\nAPI_KEY=change-me\n",
    "app/server/.env.sample": "DB_PATH=app/server/app.db\nBACKEND_PORT=8000\n",
    "app/server/pyproject.toml": '[project]\nname = "server"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n'
                                 'dependencies = []\n\n[project.optional-dependencies]\ndev = []\n',
    "app/server/server.py": SERVER,
    "app/client/package.json": json.dumps({"name": "client", "version": "0.1.0", "private": True,
                                           "dependencies": {}}, indent=2) + "\n",
    "app/client/index.js": "console.log(`client for ${process.env.VITE_BACKEND_URL}`);\n",
    "scripts/reset_db.sh": RESET_DB,
    ".mcp.json": json.dumps({"mcpServers": {"playwright": {"command": "npx", "args": [
        "@playwright/mcp", "--config", "./playwright-mcp-config.json"]}}}, indent=2) + "\n",
    "playwright-mcp-config.json": json.dumps({"browser": {"launchOptions": {"headless": True}},
                                              "outputDir": "./videos"}, indent=2) + "\n",
    "README.md": "A sample app laid out like the seed.\n",
}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def build(root: Path, uv: str | None = None, bun: str | None = None) -> Path:
    """Create root/origin.git and root/app; lock files come from the real uv and bun when given."""
    app = root / "app"
    app.mkdir(parents=True)
    for name, text in FILES.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    os.chmod(app / "scripts/reset_db.sh", 0o755)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    if uv:  # without uv there is no lock file, so setup treats app/server as no uv project
        subprocess.run([uv, "lock", "--quiet"], cwd=app / "app/server", check=True, env=env)
    if bun:
        subprocess.run([bun, "install", "--silent"], cwd=app / "app/client", check=True, env=env)
    _git(app, "init", "-q", "-b", "main")
    _git(app, "add", "-A")
    _git(app, "-c", "user.name=Sample", "-c", "user.email=sample@grove.invalid", "commit", "-q", "-m", "sample app")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], check=True)
    _git(app, "remote", "add", "origin", str(root / "origin.git"))
    _git(app, "push", "-q", "origin", "main")
    (app / ".env").write_text("APP_NAME=sample\nBACKEND_PORT=8000\nFRONTEND_PORT=5173\nAPI_KEY=s3cret-value\n")
    os.chmod(app / ".env", 0o600)
    return app


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
    from grove.resources.deps import find_tool

    print(build(Path(sys.argv[1]), find_tool("uv"), find_tool("bun")))
