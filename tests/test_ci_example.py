"""docs/ci/github-actions.yml, run locally: every `inv` line of it, in order (issue 7)."""

from __future__ import annotations

import json
import re
import shutil

from conftest import GROVE, commit_file, git, inv

WORKFLOW = GROVE / "docs" / "ci" / "github-actions.yml"


def inv_lines(job: str) -> list[list[str]]:
    text = WORKFLOW.read_text()
    body = text.split(f"\n  {job}:\n", 1)[1].split("\n  merge:\n", 1)[0] if job == "agent" else \
        text.split("\n  merge:\n", 1)[1]
    return [line.split() for line in re.findall(r"^\s+- run: inv -r \.grove (.*)$", body, flags=re.M)]


def run_job(where, lines, adw_id=None):
    for words in lines:
        words = [w.replace("${{", "").replace("matrix.adw_id", adw_id or "").replace("}}", "") for w in words]
        words = [w for w in words if w]
        out = inv(where, *words)
        assert out.returncode == 0, f"inv {' '.join(words)}: {out.stderr}"
        if "--json" in words:
            json.loads(out.stdout)


def test_the_ci_example_runs_end_to_end(repo, tmp_path):
    commit_file(repo, "scripts/agent.sh", "#!/bin/sh\necho \"$1 on $BACKEND_PORT\" > \"$1.txt\"\n"
                "git add \"$1.txt\" && git commit -q -m \"$1 did its work\"\n")
    (repo / "scripts/agent.sh").chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--amend", "--no-edit")
    git(repo, "push", "-q", "origin", "main")
    origin, artifacts = tmp_path / "origin.git", tmp_path / "artifacts"
    for adw_id in ("agent-a", "agent-b", "agent-c"):  # each matrix job: a fresh clone
        job = tmp_path / f"job-{adw_id}"
        git(tmp_path, "clone", "-q", str(origin), str(job))
        run_job(job, inv_lines("agent"), adw_id)
        git(job, "push", "-q", "origin", f"adw/{adw_id}")
        (artifacts / adw_id).mkdir(parents=True)
        shutil.copy(job / "agents" / adw_id / "adw_state.json", artifacts / adw_id)
    merger = tmp_path / "merge-job"
    git(tmp_path, "clone", "-q", str(origin), str(merger))
    for state in artifacts.iterdir():
        (merger / "agents" / state.name).mkdir(parents=True)
        shutil.copy(state / "adw_state.json", merger / "agents" / state.name)
    git(merger, "fetch", "-q", "origin", "refs/heads/adw/*:refs/heads/adw/*")
    run_job(merger, inv_lines("merge"))
    files = git(origin, "ls-tree", "--name-only", "main").split()
    assert {"agent-a.txt", "agent-b.txt", "agent-c.txt"} <= set(files)
    content = git(origin, "show", "main:agent-a.txt")
    assert re.match(r"agent-a on \d+$", content), "the agent ran with its own BACKEND_PORT exported"
