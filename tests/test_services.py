"""Issue 23, part 2: an agent's services (`grove up`, `down`, `ps`, `logs`), with real processes.

Every service binds 127.0.0.1 on the test's own port range; every process is stopped at the end.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import GROVE, cli, commit_file, gone, inv, inv_json, kill_if_alive, wait_for

sys.path.insert(0, str(GROVE / "lib"))
from grove.core.errors import GroveError  # noqa: E402
from grove.ops import services  # noqa: E402

HTTP = "web: python3 -m http.server --bind 127.0.0.1 $BACKEND_PORT\n"


@pytest.fixture
def agents(repo):
    """Two agents of a repo whose Procfile serves each worktree on its BACKEND_PORT."""
    commit_file(repo, "Procfile", HTTP + "# a comment line\nworker: sleep 300 # port=none\n")
    git_push(repo)
    for adw_id in ("s1", "s2"):
        inv(repo, "setup", "--adw-id", adw_id, "--no-install", check=True)
        (repo / "trees" / adw_id / "who.txt").write_text(adw_id)
    yield repo
    for adw_id in ("s1", "s2", "s3"):
        state = repo / "agents" / adw_id / "adw_state.json"
        if state.exists():
            recorded = json.loads(state.read_text()).get("services") or {}
            inv(repo, "down", "--adw-id", adw_id)
            kill_if_alive(*[r["pid"] for r in recorded.values()])


def git_push(repo: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "main"], check=True, capture_output=True)


def state_of(repo: Path, adw_id: str) -> dict:
    return json.loads((repo / "agents" / adw_id / "adw_state.json").read_text())


def fetch(port: int, name: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=10) as answer:
        return answer.read().decode()


def pids_of(repo: Path, adw_id: str) -> list[int]:
    return [r["pid"] for r in (state_of(repo, adw_id).get("services") or {}).values()]


def start(repo: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*cli(), *args], cwd=repo, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_agents_up_at_once_each_answer_on_their_own_port(agents):
    repo = agents
    procs = [start(repo, "up", "--adw-id", adw_id, "--service", "web", "--json") for adw_id in ("s1", "s2")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    for (out, _), adw_id in zip(outs, ("s1", "s2")):
        row = json.loads(out)["agents"][0]["services"][0]
        assert row["service"] == "web" and row["outcome"] == "started" and row["port_var"] == "BACKEND_PORT"
        assert row["port"] == state_of(repo, adw_id)["backend_port"]
        assert fetch(row["port"], "who.txt") == adw_id, "each agent's own server, on its own port"
    rows = inv_json(repo, "ps")
    assert sorted((r["adw_id"], r["health"]) for r in rows) == [("s1", "up"), ("s2", "up")]
    for r in rows:
        assert r["uptime"] is not None and r["uptime"] >= 0 and Path(r["log"]).is_file()
        assert r["log"] == str(repo / "agents" / r["adw_id"] / "logs/web.log")
    # Started again: kept, not a second server.
    again = inv_json(repo, "up", "--adw-id", "s1", "--service", "web")
    assert again["agents"][0]["services"][0]["outcome"] == "already_up"
    # The service runs in its own process group, with the env `grove run` exports.
    pid = pids_of(repo, "s1")[0]
    assert os.getpgid(pid) == pid
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"BACKEND_PORT={state_of(repo, 's1')['backend_port']}".encode() in environ and b"ADW_ID=s1" in environ
    # logs: the server's request lines.
    out = inv(repo, "logs", "--adw-id", "s1", "--service", "web", check=True)
    assert "GET /who.txt" in out.stdout
    # down leaves no process; teardown of the other agent stops its server too.
    pids = pids_of(repo, "s1")
    down = inv_json(repo, "down", "--adw-id", "s1")
    assert [(r["service"], r["outcome"]) for r in down] == [("web", "stopped")]
    assert all(gone(p) for p in pids) and "services" not in state_of(repo, "s1")
    pids = pids_of(repo, "s2")
    inv(repo, "teardown", "--adw-id", "s2", "--force", check=True)
    assert pids and all(gone(p) for p in pids)


def test_a_service_that_never_opens_its_port_fails_clearly_with_its_log(agents):
    repo = agents
    commit_file(repo / "trees/s1", "Procfile", "web: echo booting the app; sleep 300 # port=BACKEND_PORT\n")
    began = time.monotonic()
    out = inv(repo, "up", "--adw-id", "s1", "--timeout", "2")
    assert out.returncode == 1, out.stderr
    assert "s1 web did not open its port in 2s" in out.stderr and "booting the app" in out.stderr
    assert str(repo / "agents/s1/logs/web.log") in out.stderr
    assert time.monotonic() - began < 60, "bounded by --timeout, never a hang"
    assert "services" not in state_of(repo, "s1"), "what failed was stopped and forgotten"
    # One that exits at once fails at once, with its last lines.
    commit_file(repo / "trees/s1", "Procfile", "web: echo cannot bind; exit 3 # port=BACKEND_PORT\n")
    out = inv(repo, "up", "--adw-id", "s1", "--timeout", "120")
    assert out.returncode == 1 and "exited before it opened its port" in out.stderr and "cannot bind" in out.stderr


def test_bad_input_exits_2_and_starts_nothing(agents):
    repo = agents
    for args, says in ((["--timeout", "0"], "--timeout"), (["--timeout", "-5"], "--timeout"),
                       (["--service", "nope"], "no service nope"), ([], None)):
        if says is None:
            (repo / "trees/s1/Procfile").write_text("web python -m http.server\n")
            says = "is not 'name: command'"
        out = inv(repo, "up", "--adw-id", "s1", *args)
        assert out.returncode == 2 and says in out.stderr, out.stderr
        assert "services" not in state_of(repo, "s1")
    (repo / "trees/s1/Procfile").write_text("web: serve # port=NOT_A_PORT\n")
    out = inv(repo, "up", "--adw-id", "s1")
    assert out.returncode == 2 and "port=NOT_A_PORT is not one of the agent's port variables" in out.stderr
    out = inv(repo, "up", "--adw-id", "nobody")
    assert out.returncode == 2


def test_the_cap_on_running_agents_holds(agents):
    repo = agents
    env = {"ADW_MAX_RUNNING": "1"}
    inv(repo, "up", "--adw-id", "s1", "--", "web", env=env, check=True)  # names after `--` count as --service
    assert list(state_of(repo, "s1")["services"]) == ["web"]
    began = time.monotonic()
    out = inv(repo, "up", "--adw-id", "s2", "--service", "web", env=env)
    assert out.returncode == 1 and "ADW_MAX_RUNNING=1" in out.stderr and "s1" in out.stderr
    assert time.monotonic() - began < 30, "says so at once"
    assert "services" not in state_of(repo, "s2")
    out = inv(repo, "up", "--adw-id", "s2", "--service", "web", "--wait", "--timeout", "1", env=env)
    assert out.returncode == 1 and "waiting for a place for s2" in out.stderr and "waited 1s" in out.stderr
    # Waiting, visibly, until s1 goes down: then s2 starts.
    waiter = start(repo, "up", "--adw-id", "s2", "--service", "web", "--wait", "--timeout", "120", env=env)
    try:
        line = waiter.stderr.readline()
        assert "waiting for a place for s2" in line, line
        inv(repo, "down", "--adw-id", "s1", check=True)
        _, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert [r["adw_id"] for r in inv_json(repo, "ps") if r["health"] == "up"] == ["s2"]


def test_teardown_stops_a_service_that_left_the_worktree(agents):
    """Recorded pid + start time: a service that cd'd out of the worktree is stopped too."""
    repo = agents
    commit_file(repo / "trees/s1", "Procfile",
                "web: cd / && exec python3 -m http.server --bind 127.0.0.1 $BACKEND_PORT\n")
    inv(repo, "up", "--adw-id", "s1", check=True)
    pids = pids_of(repo, "s1")
    assert os.readlink(f"/proc/{pids[0]}/cwd") == "/"
    result = inv_json(repo, "teardown", "--adw-id", "s1", "--force")
    assert pids[0] in [p["pid"] for p in result["stopped_processes"]]
    wait_for(lambda: all(gone(p) for p in pids), "the service to be gone", limit=10)


def test_procfile_parsing():
    vars_ = ["BACKEND_PORT", "FRONTEND_PORT"]
    got = services.parse("api: uvicorn app:app --port ${BACKEND_PORT}\n"
                         "ui: bun run dev -- --port $FRONTEND_PORT --api $BACKEND_PORT\n"
                         "docs: mkdocs serve -a 127.0.0.1:$FRONTEND_PORT # port=none\n"
                         "job: ./worker   # port=BACKEND_PORT\n\n# note\n", vars_)
    assert [(s.name, s.port_var) for s in got] == [("api", "BACKEND_PORT"), ("ui", "FRONTEND_PORT"),
                                                   ("docs", None), ("job", "BACKEND_PORT")]
    assert got[3].command == "./worker"
    for bad in ("web\n", "web:\n", "a: x\na: y\n", "a: x # port=DB_PORT\n"):
        with pytest.raises(GroveError) as exc:
            services.parse(bad, vars_)
        assert exc.value.code == 2


def test_gc_stops_the_services_of_the_agents_it_removes(agents):
    repo = agents
    inv(repo, "up", "--adw-id", "s1", "--service", "web", check=True)
    pids = pids_of(repo, "s1")
    result = inv_json(repo, "gc", "--max-age-days", "0")
    removed = {r["adw_id"]: r for r in result["removed"]}
    assert "s1" in removed and pids[0] in [p["pid"] for p in removed["s1"]["stopped_processes"]]
    wait_for(lambda: all(gone(p) for p in pids), "the service to be gone", limit=10)


def test_json_shapes_of_up_down_ps_are_documented(agents):
    from test_docs import doc

    repo = agents
    up = inv_json(repo, "up", "--adw-id", "s1", "--service", "web")
    assert set(up) == set(doc("## `grove up")) and set(up["agents"][0]) == set(doc("## `grove up")["agents"][0])
    assert set(up["agents"][0]["services"][0]) == set(doc("## `grove up")["agents"][0]["services"][0])
    assert set(inv_json(repo, "ps")[0]) == set(doc("## `grove ps")[0])
    assert set(inv_json(repo, "down", "--adw-id", "s1")[0]) == set(doc("## `grove down")[0])
    (repo / "trees/s2/Procfile").write_text("web: exit 1 # port=BACKEND_PORT\n")
    failed = json.loads(inv(repo, "up", "--adw-id", "s2", "--json").stdout)
    assert set(failed["errors"][0]) == set(doc("## `grove up")["errors"][0])


def marked_processes(mark: str) -> list[int]:
    """Every live process whose environment carries GROVE_RUN_MARK=<mark> (what a service started)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and not gone(int(entry)):
            try:
                if f"GROVE_RUN_MARK={mark}".encode() in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_down_stops_what_a_service_started_too_and_logs_follow(agents):
    """The whole process group, and a child that left it (setsid), carry the service's mark."""
    repo = agents
    commit_file(repo / "trees/s1", "Procfile",
                "web: sleep 300 & setsid sleep 301 & exec python3 -m http.server --bind 127.0.0.1 $BACKEND_PORT\n")
    inv(repo, "up", "--adw-id", "s1", check=True)
    rec = state_of(repo, "s1")["services"]["web"]
    wait_for(lambda: len(marked_processes(rec["mark"])) == 3, "the server and its two sleeps", limit=30)
    # logs -f: what the server logs after it started, until interrupted.
    follower = start(repo, "logs", "--adw-id", "s1", "-f", "--lines", "0")
    try:
        # Requests until the follower prints one: it may start reading after the first ones (--lines 0
        # skips what is there already). Bounded: a follower that never prints fails, never hangs.
        line, end = "", time.monotonic() + 60
        while "GET /who.txt" not in line and time.monotonic() < end:
            fetch(rec["port"], "who.txt")
            if select.select([follower.stdout], [], [], 0.5)[0]:
                line = follower.stdout.readline()
        assert "GET /who.txt" in line, line
        follower.send_signal(2)  # SIGINT, as Ctrl-C
        assert follower.wait(timeout=30) == 130
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    pids = marked_processes(rec["mark"])
    try:
        inv(repo, "down", "--adw-id", "s1", check=True)
        wait_for(lambda: marked_processes(rec["mark"]) == [], "no process of the service left", limit=15)
    finally:
        kill_if_alive(*pids)


def test_a_port_someone_else_answers_on_is_not_taken_for_the_service(agents):
    """A server started by hand on the agent's port: up refuses at once instead of reporting it as
    the service (which would fail to bind, unnoticed)."""
    import socket

    repo = agents
    port = state_of(repo, "s1")["backend_port"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        out = inv(repo, "up", "--adw-id", "s1", "--service", "web")
    assert out.returncode == 1 and f"BACKEND_PORT={port} already accepts connections" in out.stderr
    assert "services" not in state_of(repo, "s1")


def test_merge_cleanup_stops_the_services_of_the_agents_it_tears_down(agents):
    repo = agents
    inv(repo, "up", "--adw-id", "s1", "--service", "web", check=True)
    pids = pids_of(repo, "s1")
    commit_file(repo / "trees/s1", "who.txt", "s1")  # merge takes committed work only
    inv(repo, "status", "--adw-id", "s1", "--set", "completed", check=True)
    summary = inv_json(repo, "merge", "--adw-id", "s1", "--cleanup")
    cleanup = summary["results"][0]["cleanup"]
    assert cleanup["branch_action"] == "deleted" and pids[0] in [p["pid"] for p in cleanup["stopped_processes"]]
    wait_for(lambda: all(gone(p) for p in pids), "the service to be gone", limit=10)
