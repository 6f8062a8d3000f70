"""The documentation matches the product: JSON shapes, README tasks and flags, config keys (issue 7)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import GROVE, cli, commit_file, inv, inv_json

from grove.core.config import DEFAULTS


def documented_blocks() -> dict[str, list]:
    """Heading -> the JSON examples under it, from docs/json.md ('…' stands for any value)."""
    out, heading = {}, None
    text = (GROVE / "docs/json.md").read_text()
    for part in re.split(r"^(## .*)$", text, flags=re.M):
        if part.startswith("## "):
            heading = part
            continue
        if heading:
            out[heading] = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", part, flags=re.S)]
    return out


def doc(prefix: str, index: int = 0):
    blocks = documented_blocks()
    heading = next(h for h in blocks if h.startswith(prefix))
    return blocks[heading][index]


def test_json_shapes_match_real_output(repo):
    state = inv_json(repo, "setup", "--adw-id", "d1", "--no-install")
    assert set(state) == set(doc("## `inv setup --json` (one agent)"))
    assert set(inv_json(repo, "status", "--adw-id", "d1")) == set(state)
    multi = inv_json(repo, "setup", "--adw-id", "d2", "--adw-id", "d3", "--no-install")
    assert set(multi) == set(doc("## `inv setup --json` (several agents)"))
    rows = inv_json(repo, "list")
    assert set(doc("## `inv list --json`")[0]) <= set(rows[0]) and set(rows[0]) - set(state) == {"git", "exists"}
    assert set(inv_json(repo, "ports.claim", "--adw-id", "d1")) == set(doc("## `inv ports.claim", 0))
    assert set(inv_json(repo, "ports.show")[0]) == set(doc("## `inv ports.claim", 1)[0])
    assert set(inv_json(repo, "git.fetch")) == set(doc("## `inv git.fetch"))
    assert set(inv_json(repo, "env.merge", "--adw-id", "d1")) == set(doc("## Single steps"))
    assert set(inv_json(repo, "git-worktrees")[0]) == set(doc("## `inv git-worktrees")[0])
    assert set(inv_json(repo, "gc", "--dry-run")) == set(doc("## `inv gc"))
    healthy = inv_json(repo, "doctor")
    assert set(healthy) == set(doc("## `inv doctor"))
    commit_file(repo / "trees/d1", "x.txt", "x\n")
    inv(repo, "status", "--adw-id", "d1", "--set", "completed", check=True)
    summary = inv_json(repo, "merge", "--adw-id", "d1")
    documented = doc("## `inv merge")
    assert set(summary) == set(documented)
    assert set(summary["results"][0]) == set(documented["results"][0])
    ran = json.loads(inv(repo, "exec", "--adw-id", "d2", "--json", "--", "git", "status").stdout)
    assert set(ran) == set(doc("## `inv exec")) and set(ran["results"][0]) == set(doc("## `inv exec")["results"][0])
    inv(repo, "status", "--adw-id", "d2", "--set", "completed", check=True)
    assert set(inv_json(repo, "teardown", "--adw-id", "d2")) == set(doc("## `inv teardown"))
    assert set(inv_json(repo, "cleanup-epic", "--epic", "none")) == set(doc("## `inv cleanup-epic"))
    error = inv(repo, "setup", "--adw-id=../x", "--json")
    assert error.returncode == 2 and set(json.loads(error.stdout)) == set(doc("## Errors"))


def test_merge_queue_json_shapes_match_real_output(repo):
    """issue 13: inv sync, inv conflicts, inv env.stage, and a batch merge summary."""
    for name in ("q1", "q2"):
        inv(repo, "setup", "--adw-id", name, "--no-install", check=True)
        commit_file(repo / f"trees/{name}", "same.txt", f"{name}\n")
        inv(repo, "status", "--adw-id", name, "--set", "completed", check=True)
    forecast = inv_json(repo, "conflicts")
    documented = doc("## `inv conflicts")
    assert set(forecast) == set(documented) and set(forecast["branches"][0]) == set(documented["branches"][0])
    assert set(forecast["pairs"][0]) == set(documented["pairs"][0])
    commit_file(repo, "theirs.txt", "main moved\n")
    synced = inv_json(repo, "sync", "--adw-id", "q1")
    assert set(synced) == set(doc("## `inv sync")) and synced["outcome"] == "merged"
    assert set(inv_json(repo, "env.stage", "--adw-id", "q1")) == set(doc("## `inv env.stage"))
    inv(repo, "status", "--adw-id", "q1", "--set", "completed", check=True)
    summary = inv_json(repo, "merge", "--adw-id", "q1", "--batch", "--validate", "true")
    assert set(summary) == set(doc("## `inv merge")) and summary["mode"] == "batch" and summary["validations"] == 1


def inv_tasks() -> dict[str, str]:
    out = subprocess.run([*cli(), "--list"], capture_output=True, text=True, check=True).stdout
    # Task names sit at a two-space indent; wrapped summaries are indented further.
    return {line.split()[0]: line for line in out.splitlines()[2:] if re.match(r"^  \S", line)}


def test_every_task_has_a_summary_and_help_for_every_flag():
    tasks = inv_tasks()
    for name in ("setup", "teardown", "list", "status", "merge", "doctor", "gc", "run", "exec", "path", "init",
                 "git-worktrees", "cleanup-epic", "ports.claim", "deps.install", "db.reset", "env.merge",
                 "sync", "conflicts", "env.stage"):
        assert name in tasks, name
    for name in tasks:
        out = subprocess.run([*cli(), "--help", name], capture_output=True, text=True).stdout
        flags = re.findall(r"^\s+(?:-\w(?: \w+)?, )?(--[\w\[\]-]+)(?:=\w+)?\s*(.*)$", out, flags=re.M)
        assert flags, name
        for flag, text in flags:
            assert text.strip(), f"{name} {flag} has no help text"


def test_readme_names_only_real_tasks_and_flags():
    # Issue 21: the README is short; the details moved to docs/*.md, checked the same way, and they
    # write commands as `grove TASK` (`inv TASK` and `inv -r DIR TASK` remain alternatives).
    readme = "\n".join(p.read_text() for p in [GROVE / "README.md", *sorted((GROVE / "docs").glob("*.md"))])
    tasks = inv_tasks()
    helps = {}
    for line in re.findall(r"^\s*(?:\$ )?(?:inv|grove) (?:-r \S+ )?([a-z][\w.-]*)(.*)$", readme, flags=re.M):
        name, rest = line
        if name.startswith("-") or name == "help":
            continue
        assert name in tasks, f"README names `inv {name}`, which does not exist"
        if name not in helps:
            helps[name] = subprocess.run([*cli(), "--help", name], capture_output=True,
                                         text=True).stdout
        for flag in re.findall(r"(--[a-z][\w-]*)", rest.split(" -- ")[0]):
            negated = flag.replace("--no-", "--[no-]")
            assert flag in helps[name] or negated in helps[name], f"README: inv {name} has no {flag}"


def test_every_config_key_is_in_env_example_with_its_default():
    example = (GROVE / ".env.example").read_text()
    for key, default in DEFAULTS.items():
        assert f"# {key}={default}\n" in example, key
        assert key in (GROVE / "README.md").read_text(), f"README does not document {key}"


def test_completion_script_prints_for_each_shell():
    for shell in ("bash", "zsh", "fish"):
        out = subprocess.run([*cli(), "--print-completion-script", shell],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "inv" in out.stdout, shell


@pytest.mark.parametrize("layer", ["invoke_yaml", "invoke_env", "repo_env", "process_env", "flag"])
def test_config_precedence(repo, tmp_path, layer, monkeypatch):
    """flags > process env > invoke.yaml / INVOKE_GROVE_* > target .env > Grove .env > defaults."""
    from grove.core import config

    monkeypatch.delenv("ADW_BASE_BRANCH", raising=False)
    invoke_cfg = {"base_branch": "from-yaml"} if layer in ("invoke_yaml", "repo_env", "process_env", "flag") else {}
    if layer == "invoke_env":
        out = subprocess.run([*cli(), "git.fetch", "--json"], cwd=repo, capture_output=True,
                             text=True, env={**__import__("os").environ, "INVOKE_GROVE_BASE_BRANCH": "nope-env"})
        assert out.returncode == 2 and "nope-env" in out.stdout
        return
    (repo / ".env").write_text("ADW_BASE_BRANCH=from-dotenv\n")
    if layer == "process_env" or layer == "flag":
        monkeypatch.setenv("ADW_BASE_BRANCH", "from-process")
    flags = {"repo": repo, "base_branch": "from-flag" if layer == "flag" else None}
    got = config.load(flags, invoke_config=invoke_cfg if layer != "repo_env" else {}).base_branch
    expected = {"invoke_yaml": "from-yaml", "repo_env": "from-dotenv", "process_env": "from-process",
                "flag": "from-flag"}[layer]
    assert got == expected
    if layer == "invoke_yaml":  # invoke.yaml beats the target repo's .env
        assert config.load({"repo": repo}, invoke_config={"base_branch": "from-yaml"}).base_branch == "from-yaml"


def test_postgres_json_shapes_match_real_output(repo, pg_server, template_db, monkeypatch):
    """The `database` state field, teardown's `databases` and doctor's `orphan_database` (issue 14)."""
    monkeypatch.setenv("ADW_DB_URL", pg_server.url())
    monkeypatch.setenv("ADW_DB_TEMPLATE", template_db)
    state = inv_json(repo, "setup", "--adw-id", "pg1", "--adw-id", "pg2", "--no-install")["agents"][0]
    assert set(state["database"]) == set(doc("## `inv setup --json` (one agent)", 1))
    done = inv_json(repo, "teardown", "--adw-id", "pg1", "--force")
    assert set(done) == set(doc("## `inv teardown"))
    assert set(done["databases"][0]) == set(doc("## `inv teardown")["databases"][0])
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(repo / "trees/pg2")], check=True)
    __import__("shutil").rmtree(repo / "agents/pg2")
    # With its branch left the agent can be resumed, and its database is no orphan (issue 20).
    for branch in subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname:short)", "refs/heads/"],
                                 check=True, capture_output=True, text=True).stdout.split():
        if branch != "main":
            subprocess.run(["git", "-C", str(repo), "branch", "-D", branch], check=True, capture_output=True)
    report = json.loads(inv(repo, "doctor", "--json").stdout)
    orphan = next(p for p in report["problems"] if p["kind"] == "orphan_database")
    assert set(orphan) == set(doc("## `inv doctor")["problems"][0]) - {"path"} | {"database", "url"}
    inv(repo, "doctor", "--fix", check=True)
