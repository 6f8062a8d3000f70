"""Every mechanism in grove.core.portable, forced one at a time, gives the same answers (issue 15).

Linux has all three process mechanisms (psutil, /proc, ps + lsof) and both copies (GNU cp, Python),
so the fallbacks macOS would take are exercised here on every run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git, inv, inv_json
from test_exec import wait_for

from grove.core import files, portable
from grove.core.errors import GroveError

BACKENDS = ["psutil", "proc", "lsof"]


@pytest.fixture
def sleepers(tmp_path):
    """Processes inside tmp/inside (at two depths), in a sibling sharing its name as a prefix, and outside."""
    inside, prefix_twin = tmp_path / "inside", tmp_path / "inside-twin"
    (inside / "deep/er").mkdir(parents=True)
    prefix_twin.mkdir()
    procs = {"top": subprocess.Popen(["sleep", "600"], cwd=inside),
             "deep": subprocess.Popen(["sleep", "601"], cwd=inside / "deep/er"),
             "twin": subprocess.Popen(["sleep", "602"], cwd=prefix_twin),
             "out": subprocess.Popen(["sleep", "603"], cwd=tmp_path)}
    yield inside, procs
    for p in procs.values():
        p.kill()
        p.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_processes_inside_a_directory_are_found_by_cwd(backend, sleepers, monkeypatch):
    inside, procs = sleepers
    monkeypatch.chdir(inside)  # the test itself sits inside: Grove never lists itself or its ancestors
    found = portable.inside(inside, backend)
    assert sorted(p.pid for p in found) == sorted([procs["top"].pid, procs["deep"].pid])
    assert {p.name for p in found} == {"sleep"}
    assert os.getpid() not in {p.pid for p in found}


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_inside_escalates_to_sigkill_and_spares_everything_else(backend, sleepers, tmp_path):
    inside, procs = sleepers
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                                 "time.sleep(600)"], cwd=inside, stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline() == "ready\n"
        stopped = portable.stop_inside(inside, backend, grace=0.3)
        by_pid = {d["pid"]: d for d in stopped}
        assert set(by_pid) == {procs["top"].pid, procs["deep"].pid, stubborn.pid}
        assert by_pid[stubborn.pid]["signal"] == "SIGKILL" and by_pid[procs["top"].pid]["signal"] == "SIGTERM"
        assert stubborn.wait(timeout=30) == -signal.SIGKILL
        assert procs["top"].wait(timeout=30) == -signal.SIGTERM
        assert procs["twin"].poll() is None and procs["out"].poll() is None
        assert portable.stop_inside(inside, backend, grace=0.3) == []
    finally:
        stubborn.kill()
        stubborn.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_alive_and_tree_agree_across_backends(backend):
    parent = subprocess.Popen(["sh", "-c", "sleep 600 & setsid sleep 601 & echo ready; wait"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout.readline() == "ready\n"

        def settled():  # the forks have exec'd sleep and setsid has run
            kids = portable.tree(parent.pid, backend)
            return len(kids) == 2 and {p.name for p in kids} == {"sleep"} and any(p.pgid != parent.pid for p in kids)

        wait_for(settled, "both children to start")  # the setsid child left the group and is still found
        kids = portable.tree(parent.pid, backend)
        assert portable.alive(parent.pid, backend)
        assert portable.stop_tree(parent, backend, grace=5) == "SIGTERM"
        assert [p.pid for p in kids if portable.alive(p.pid, backend)] == []
        assert not portable.alive(parent.pid, backend)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zombie_is_not_alive(backend):
    """Issue 25, liveness: a process that exited but is not yet reaped holds nothing any more."""
    child = subprocess.Popen(["true"])
    try:
        wait_for(lambda: (Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"),
                 "the child to exit (unreaped)")
        assert not portable.alive(child.pid, backend)
    finally:
        child.wait()


@pytest.mark.parametrize("backend", ["cp", "python"])
def test_clone_files_keeps_modes_symlinks_and_layout(backend, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a/b").mkdir(parents=True)
    dst.mkdir()
    (src / "a/b/tool.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "a/b/tool.sh", 0o750)
    os.symlink("b/tool.sh", src / "a/link")
    os.symlink("/nonexistent/target", src / "dangling")
    (src / "plain.key").write_text("k\n")
    os.chmod(src / "plain.key", 0o600)
    files.clone_files(src, dst, ["a/b/tool.sh", "a/link", "dangling", "plain.key"], backend)
    assert (dst / "a/b/tool.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (dst / "a/b/tool.sh").stat().st_mode & 0o777 == 0o750
    assert os.readlink(dst / "a/link") == "b/tool.sh" and os.readlink(dst / "dangling") == "/nonexistent/target"
    assert (dst / "plain.key").stat().st_mode & 0o777 == 0o600
    assert (dst / "a/b/tool.sh").stat().st_mtime == (src / "a/b/tool.sh").stat().st_mtime
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == ["a", "a/b", "a/b/tool.sh", "a/link",
                                                                       "dangling", "plain.key"]


def test_setup_copies_worktreeinclude_with_the_python_fallback(repo, monkeypatch):
    monkeypatch.setenv("ADW_COPY_BACKEND", "python")
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "local/\n")
    (repo / ".worktreeinclude").write_text("local/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "include list")
    (repo / "local").mkdir()
    (repo / "local/tool.sh").write_text("#!/bin/sh\n")
    os.chmod(repo / "local/tool.sh", 0o755)
    os.symlink("tool.sh", repo / "local/link")
    state = inv_json(repo, "setup", "--adw-id", "cp1", "--no-install", "--no-db", "--no-fetch")
    wt = repo / "trees/cp1"
    assert state["steps"]["include"]["outcome"] == "done"
    assert os.access(wt / "local/tool.sh", os.X_OK) and os.readlink(wt / "local/link") == "tool.sh"


def test_teardown_with_the_lsof_fallback_stops_and_reports(repo, monkeypatch):
    monkeypatch.setenv("ADW_PROCESS_BACKEND", "lsof")
    inv_json(repo, "setup", "--adw-id", "ls1", "--no-install", "--no-db", "--no-fetch")
    server = subprocess.Popen(["sleep", "600"], cwd=repo / "trees/ls1")
    try:
        out = inv(repo, "teardown", "--adw-id", "ls1", "--force", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["stopped_processes"] == [{"pid": server.pid, "name": "sleep",
                                                                 "signal": "SIGTERM"}]
    finally:
        server.kill()
        server.wait()


def test_forcing_a_missing_or_unknown_mechanism_is_bad_input(repo, monkeypatch):
    for key, value in (("ADW_PROCESS_BACKEND", "magic"), ("ADW_COPY_BACKEND", "rsync"), ("ADW_STOP_GRACE", "-1")):
        monkeypatch.setenv(key, value)
        out = inv(repo, "list")
        assert out.returncode == 2 and key in out.stderr
        monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", "/nonexistent")  # no lsof, no ps on PATH
    with pytest.raises(GroveError) as err:
        portable.process_backend("lsof")
    assert err.value.code == 2 and "not available" in err.value.message


def test_no_psutil_falls_back_to_proc(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    assert portable.process_backend() == ("proc" if Path("/proc/self/cwd").exists() else "lsof")
    with pytest.raises(GroveError):
        portable.process_backend("psutil")
