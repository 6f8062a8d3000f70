"""The scripted "coding agent" of `make demo`, run by `inv exec` in each agent's worktree.

Like a real agent it starts its dev server (on its own BACKEND_PORT, from its own worktree) and
leaves it running, then edits code and commits. demo-a and demo-c both change the same line of
the server, so whichever merges second conflicts; `--resolve` is that agent fixing the conflict
after syncing with the base: it takes the base's version and applies its own change again.
Stdlib only: `inv exec` strips Grove's own venv, so this runs on the machine's python3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVER = Path("app/server/server.py")


def add_version(text: str) -> str:
    return text.replace('{"adw_id": adw_id, ', '{"api": 2, "adw_id": adw_id, ')


def rename_db(text: str) -> str:
    return text.replace('"db": DB,', '"database": DB,')


def add_docs() -> None:
    readme = Path("README.md")
    readme.write_text(readme.read_text() + "\n## Running the server\n\n`python app/server/server.py` serves on "
                      "$BACKEND_PORT and answers with its agent id.\n")


TASKS = {  # adw_id: (commit message, the edit)
    "demo-a": ("API: answer with an api version", lambda: SERVER.write_text(add_version(SERVER.read_text()))),
    "demo-b": ("Docs: how to run the server", add_docs),
    "demo-c": ("API: rename the db field to database", lambda: SERVER.write_text(rename_db(SERVER.read_text()))),
}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def start_server(adw_id: str) -> None:
    """Start the backend and leave it running (as agents do); `inv teardown` will stop it."""
    venv_python = Path("app/server/.venv/bin/python")
    python = str(venv_python) if venv_python.exists() else sys.executable
    subprocess.Popen([python, str(SERVER)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{os.environ['BACKEND_PORT']}/"
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                seen = json.loads(answer.read())
            print(f"server {url} answers adw_id={seen['adw_id']}", flush=True)
            if seen["adw_id"] != adw_id:
                raise SystemExit(f"NOT ISOLATED: {url} answered for {seen['adw_id']}")
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server did not answer on {url}")


def work(adw_id: str) -> None:
    message, edit = TASKS[adw_id]
    start_server(adw_id)
    print(f"thinking about: {message}", flush=True)
    time.sleep(1.0 if adw_id == "demo-c" else 0.2)  # demo-c finishes last, so it is merged last
    edit()
    git("commit", "-q", "-am", message)
    print(f"committed {git('rev-parse', '--short', 'HEAD')}: {message}", flush=True)


def resolve(adw_id: str) -> None:
    """Mid-merge with the base: keep the base's side of each conflicted file, then redo this agent's edit."""
    conflicted = git("diff", "--name-only", "--diff-filter=U").split()
    print(f"conflicted: {', '.join(conflicted)}", flush=True)
    git("checkout", "--theirs", "--", *conflicted)
    TASKS[adw_id][1]()
    git("add", "--", *conflicted)
    git("commit", "-q", "--no-edit")
    print(f"resolved and committed {git('rev-parse', '--short', 'HEAD')}", flush=True)


if __name__ == "__main__":
    agent = os.environ["ADW_ID"]
    resolve(agent) if "--resolve" in sys.argv else work(agent)
