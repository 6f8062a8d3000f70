"""Shared fixtures: sealed git, real temporary repos with a bare origin, and `inv` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The PostgreSQL fixtures (a throwaway server on a Unix socket, seeded templates) live in
# tests/pg_fixture.py; imported here so one session-scoped server serves every test module.
from pg_fixture import pg_server, pg_url, template_db  # noqa: E402,F401

GROVE = Path(__file__).resolve().parent.parent
LIB = GROVE / "lib"
INV = Path(sys.executable).parent / "inv"
GROVE_BIN = Path(sys.executable).parent / "grove"
sys.path.insert(0, str(LIB))
# Each test drives Grove through one of its two front doors, `inv -r <checkout>` or the installed
# `grove` command, chosen per test from a hash of its id: over the suite both are exercised on
# every kind of call. GROVE_TEST_CLI=inv or =grove pins one for a whole run.
_cli = ["inv"]


@pytest.fixture(autouse=True)
def _front_door(request):
    pinned = os.environ.get("GROVE_TEST_CLI")
    digest = __import__("hashlib").sha256(request.node.nodeid.encode()).digest()[0]
    _cli[0] = pinned or ("grove" if digest % 2 else "inv")
    yield


@pytest.fixture(autouse=True)
def _port_registry(tmp_path_factory, monkeypatch):
    # Issue 23: the port lease registry is one per machine (the user's state dir). Each test gets
    # its own, so no test ever reads or writes the real user's leases, nor another test's.
    path = tmp_path_factory.mktemp("leases") / "ports.json"
    monkeypatch.setenv("ADW_PORT_REGISTRY", str(path))
    yield path


def port_leases(repo: Path, registry: Path | None = None) -> dict[str, dict]:
    """``{slot: lease}`` of ``repo``'s leases in this test's machine-wide registry (issue 23)."""
    path = Path(registry or os.environ["ADW_PORT_REGISTRY"])
    if not path.exists():
        return {}
    common = str((repo / ".git").resolve())
    return {str(lease["slot"]): lease for lease in json.loads(path.read_text())["leases"] if lease["repo"] == common}


def cli() -> list[str]:
    """The argv prefix of the front door this test uses."""
    return [str(GROVE_BIN)] if _cli[0] == "grove" else [str(INV), "-r", str(GROVE)]


def pytest_configure(config):
    # Tests run sealed (worktrunk, pre-commit): no user or system git config, pinned identity and
    # dates, a private HOME, and no ADW_* setting leaking in from the machine.
    home = Path(os.environ.get("PYTEST_GROVE_HOME") or __import__("tempfile").mkdtemp(prefix="grove-home-"))
    for key in list(os.environ):
        if key.startswith(("ADW_", "GIT_", "INVOKE_")) or key == "GROVE_FAULT":
            del os.environ[key]
    os.environ.update({
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Grove Test",
        "GIT_AUTHOR_EMAIL": "test@grove.invalid",
        "GIT_COMMITTER_NAME": "Grove Test",
        "GIT_COMMITTER_EMAIL": "test@grove.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
        # Each test's repo uses its own port range (see `repo`); keep uv and bun caches across tests.
        "UV_CACHE_DIR": str(Path(os.environ.get("XDG_CACHE_HOME", "/tmp")) / "grove-test-uv-cache"),
        "BUN_INSTALL_CACHE_DIR": str(Path("/tmp") / "grove-test-bun-cache"),
        # No pool refresh in the background unless a test asks for it (tests/test_pool_refresh.py):
        # a detached `grove pool` must not outlive the test that caused it.
        "ADW_POOL_REFRESH": "off",
    })


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit_file(cwd: Path, name: str, text: str, message: str | None = None) -> str:
    path = cwd / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(cwd, "add", "--", name)
    git(cwd, "commit", "-q", "-m", message or f"change {name}")
    return git(cwd, "rev-parse", "HEAD")


_port_base = [20000]


def make_repo(root: Path, *, gitignore: bool = True, remote: bool = True) -> Path:
    """A checkout at root/app on main with one commit, pushed to a bare root/origin.git."""
    app = root / "app"
    app.mkdir(parents=True)
    git(app, "init", "-q", "-b", "main")
    if gitignore:
        (app / ".gitignore").write_text("/trees/\n/agents/\n.ports.env\nnode_modules/\n.venv/\n*.db\n")
    (app / "README.md").write_text("sample app\n")
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "initial")
    if remote:
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], check=True)
        git(app, "remote", "add", "origin", str(root / "origin.git"))
        git(app, "push", "-q", "origin", "main")
    return app


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    # A port range of its own per test, so one test's servers never make another test's slot busy.
    # Wrapping inside 20000..59999: a suite of more than ~450 repo tests walked past port 65535,
    # and every later setup was bad input (ADW_BACKEND_PORT_BASE out of range).
    _port_base[0] = 20000 + (_port_base[0] - 20000 + 100) % 40000
    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", str(_port_base[0]))
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", str(_port_base[0] + 50))
    return make_repo(tmp_path)


def inv(repo: Path, *args: str, env: dict | None = None, timeout: float = 120, check: bool | None = None):
    """Run `inv -r <grove> ARGS` (or `grove ARGS`) in ``repo`` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run([*cli(), *args], cwd=repo, env=full_env, capture_output=True,
                         text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"inv {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def inv_json(repo: Path, *args: str, **kw):
    out = inv(repo, *args, "--json", check=True, **kw)
    return json.loads(out.stdout)


def push_from_a_clone(origin: Path, clone: Path) -> str:
    """Push one commit to ``origin`` from a clone of it (origin moves, as merges make it); the commit."""
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    tip = commit_file(clone, "upstream.txt", "upstream\n", "upstream work")
    git(clone, "push", "-q", "origin", "main")
    return tip


def settings_for(repo: Path, **overrides):
    from grove.core import config

    return config.load({"repo": repo, **overrides})


def snapshot(repo: Path) -> dict:
    """What a failed or refused command must leave unchanged: refs, worktrees, registry, files."""
    files = sorted(
        str(p.relative_to(repo)) for p in repo.rglob("*")
        if ".git" not in p.parts and not (p.suffix == ".lock" and ".grove" in p.parts)
    )
    return {
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "registry": _leases_or_text(repo),
        "files": files,
        "exclude": _read(repo / ".git" / "info" / "exclude"),
    }


def _leases_or_text(repo: Path) -> dict | str:
    """The repo's leases in the machine registry; its raw text when it is not a registry at all."""
    try:
        return port_leases(repo)
    except (ValueError, KeyError, TypeError, AttributeError):
        return _read(Path(os.environ["ADW_PORT_REGISTRY"]))


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, limit: float = 60.0) -> None:
    """Poll until ``predicate()``: an ordering device; the limit only turns a hang into a failure."""
    end = time.monotonic() + limit
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.communicate()}")
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """Exited (a zombie counts: this machine's init does not always reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill_if_alive(*pids: int) -> None:
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def make_idle(repo: Path, adw_id: str, days: float = 30) -> None:
    """An agent that has done nothing for ``days``: its files and its state look that old (for gc)."""
    import time

    past = time.time() - days * 86400
    wt = repo / "trees" / adw_id
    for path in [wt, *wt.rglob("*")]:
        if ".git" not in path.parts:
            os.utime(path, (past, past), follow_symlinks=False)
    state_file = repo / "agents" / adw_id / "adw_state.json"
    data = json.loads(state_file.read_text())
    data["updated_at"] = "2000-01-01T00:00:00Z"
    state_file.write_text(json.dumps(data))
