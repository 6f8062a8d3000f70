"""Adversarial review 2: run marks (exec, merge validations), sync --strategy rebase backups, and the
private-index checkout of new worktrees. Real git, real processes; ordered by files, never by sleeps."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GROVE, cli, commit_file, git, gone, inv, inv_json, kill_if_alive, settings_for, wait_for

from grove.core import portable  # noqa: E402
from test_merge import agent  # noqa: E402


def start_inv(repo: Path, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([*cli(), *args], cwd=repo, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


# -- 1. run marks ----------------------------------------------------------------------------------


def test_exec_that_exits_normally_leaves_its_background_daemon_running(repo, tmp_path):
    agent(repo, "bg", {}, status="created")
    pidfile = tmp_path / "daemon.pid"
    script = f'(cd / && setsid sleep 611 & echo $! > {pidfile}); sleep 0.1; echo started'
    out = inv(repo, "exec", "--adw-id", "bg", "--timeout", "60", "--json", "--", "sh", "-c", script)
    daemon = read_pid(pidfile)
    try:
        assert out.returncode == 0, out.stderr
        assert not gone(daemon), "inv exec stopped a server the command meant to keep"
    finally:
        kill_if_alive(daemon)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_inv_merge_mid_validation_stops_the_validation_and_lands_nothing(repo, tmp_path, sig):
    """Ctrl-C, or the SIGTERM a CI runner or `timeout` sends, while a validation runs: the validation
    (in a session of its own, so the terminal's Ctrl-C never reaches it) must not outlive `inv merge`."""
    agent(repo, "iv", {"iv.txt": "1\n"})
    before = git(repo, "rev-parse", "main")
    shell, child = tmp_path / "shell.pid", tmp_path / "child.pid"
    validate = (f"[ -e iv.txt ] || exit 0; echo $$ > {shlex.quote(str(shell))}; "
                f"sleep 612 & echo $! > {shlex.quote(str(child))}; wait")
    merging = start_inv(repo, "merge", "--adw-id", "iv", "--json", "--validate", validate)
    wait_for(lambda: child.exists() and child.read_text().strip(), "the validation to start", merging)
    pids = [read_pid(shell), read_pid(child)]
    try:
        merging.send_signal(sig)
        merging.communicate(timeout=120)
        assert merging.returncode != 0
        assert [p for p in pids if not gone(p)] == [], f"the validation outlived inv merge ({sig.name})"
        assert git(repo, "rev-parse", "main") == before
        again = inv(repo, "merge", "--adw-id", "iv", "--json", "--validate", "true")
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        kill_if_alive(*pids)


LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def spawn_with_pid(pid: int, script: str, tries: int = 50) -> subprocess.Popen | None:
    """A new session leader running ``sh -c script`` whose pid is ``pid`` (the kernel hands out
    ns_last_pid + 1), or None when the pid is taken (another fork won the race every time, or the pid
    is still held). The script starts only once its pid is known to be right: a loser is killed while
    it still waits for the go, so it never writes a file or leaves a child behind."""
    for _ in range(tries):
        LAST_PID.write_text(str(pid - 1))
        child = subprocess.Popen(["sh", "-c", f"read go; {script}"], stdin=subprocess.PIPE,
                                 start_new_session=True, text=True)
        if child.pid == pid:
            child.stdin.write("go\n")
            child.stdin.close()
            return child
        child.kill()
        child.wait()
    return None


@pytest.mark.skipif(not os.access(LAST_PID, os.W_OK), reason="needs a writable ns_last_pid (root) to reuse a pid")
def test_a_validation_stop_never_signals_a_process_that_reused_its_pid(repo, tmp_path, monkeypatch):
    """run_tree reaped the validation (child.wait) before stopping its group and tree: once reaped, its
    pid, which is also the group id stop_tree signals, is free. Another agent's `inv exec` command (a
    session leader) that the kernel gives that pid has its whole group killed, and its children too."""
    from grove.core import proc

    real_stop = portable.stop_tree
    victims: list[subprocess.Popen] = []
    child_pid = tmp_path / "victim-child.pid"

    def another_run_takes_the_pid(popen, *args, **kw):
        # Here the validation has exited; if Grove has reaped it, the kernel may hand its pid out again.
        victim = spawn_with_pid(popen.pid, f"sleep 614 & echo $! > {child_pid}; wait")
        if victim is not None:
            victims.append(victim)
            wait_for(lambda: child_pid.exists() and child_pid.read_text().strip(), "the victim's child")
        return real_stop(popen, *args, **kw)

    monkeypatch.setattr(portable, "stop_tree", another_run_takes_the_pid)
    try:
        code, _ = proc.run_tree(["true"], cwd=repo, env=dict(os.environ), timeout=60)
        assert code == 0
        if victims:
            grandchild = read_pid(child_pid)
            assert victims[0].poll() is None and not gone(grandchild), \
                "stopping a finished validation killed another process group that reused its pid"
    finally:
        for victim in victims:
            os.killpg(victim.pid, signal.SIGKILL) if victim.poll() is None else None
            victim.wait()
        if child_pid.exists():
            kill_if_alive(read_pid(child_pid))


def _limit_memory(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_a_validation_with_a_long_log_does_not_need_ten_times_its_size_in_memory(repo, tmp_path):
    """run_tree read a validation's whole output into one string, and the merge split it into a list
    of lines to keep the last 20: about ten bytes of memory per byte of output (a 40 MB log took
    384 MB), so a verbose suite's gigabyte log runs Grove out of memory. 100 MB of output under a
    768 MiB address-space limit: the merge must still report the failure with the log's tail."""
    agent(repo, "big", {"big.txt": "1\n"})
    validate = "[ -e big.txt ] || exit 0; yes | head -c 100000000; echo last line; exit 1"
    out = subprocess.run([*cli(), "merge", "--adw-id", "big", "--json", "--validate", validate], cwd=repo,
                         capture_output=True, text=True, timeout=300, preexec_fn=_limit_memory(768 << 20))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "MemoryError" not in out.stderr, out.stderr[-2000:]
    result = json.loads(out.stdout)["results"][0]
    assert result["outcome"] == "validation_failed" and result["exit_code"] == 1
    assert result["output_tail"].endswith("last line") and "last line" in result["reason"]


# -- 2. sync --strategy rebase -------------------------------------------------------------------


def reachable(repo: Path, commit: str) -> bool:
    return bool(git(repo, "for-each-ref", "--format=%(refname)", f"--contains={commit}"))


def test_a_conflicted_rebase_continued_by_the_agent_then_torn_down_loses_no_original_commit(repo):
    commit_file(repo, "shared.txt", "base\n")
    wt = agent(repo, "rb", {"mine.txt": "1\n", "shared.txt": "agent's\n", "more.txt": "3\n"}, status="in_progress")
    originals = git(wt, "rev-list", "main..HEAD").split()
    commit_file(repo, "shared.txt", "main's\n")
    out = inv(repo, "sync", "--adw-id", "rb", "--strategy", "rebase", "--json")
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["outcome"] == "conflict" and result["backup"], result
    (wt / "shared.txt").write_text("both\n")
    git(wt, "add", "shared.txt")
    subprocess.run(["git", "-C", str(wt), "rebase", "--continue"], check=True, capture_output=True,
                   env=dict(os.environ, GIT_EDITOR="true"))
    assert inv_json(repo, "sync", "--adw-id", "rb")["outcome"] == "up_to_date"
    inv(repo, "teardown", "--adw-id", "rb", "--force", "--delete-branch", check=True)
    inv(repo, "doctor", "--fix", check=True)
    assert [c for c in originals if not reachable(repo, c)] == []
    assert json.loads(inv(repo, "doctor", "--json").stdout)["problems"] == []


def test_a_rebase_of_a_branch_holding_a_merge_keeps_the_merge_reachable(repo):
    wt = agent(repo, "rm", {"mine.txt": "1\n"}, status="in_progress")
    commit_file(repo, "theirs.txt", "1\n")
    assert inv_json(repo, "sync", "--adw-id", "rm")["outcome"] == "merged"
    commit_file(wt, "mine2.txt", "2\n")
    merge_commit = git(wt, "rev-parse", "HEAD~1")
    commit_file(repo, "theirs2.txt", "2\n")
    result = inv_json(repo, "sync", "--adw-id", "rm", "--strategy", "rebase")
    assert result["outcome"] == "rebased" and result["backup"]
    assert reachable(repo, merge_commit)
    assert git(wt, "rev-list", "--merges", "main..HEAD") == ""


def test_sync_rebase_leaves_a_users_branch_alone_whatever_rebase_updaterefs_says(repo):
    """With the user's `rebase.updateRefs=true` (git 2.38+), `git rebase` also moves every other
    branch that points into the rebased commits. Grove's own rebase must not touch the user's branches."""
    wt = agent(repo, "ur", {"a.txt": "1\n", "b.txt": "2\n"}, status="in_progress")
    git(repo, "branch", "users-own", "adw/ur~1")
    mine = git(repo, "rev-parse", "users-own")
    git(repo, "config", "rebase.updateRefs", "true")
    commit_file(repo, "theirs.txt", "1\n")
    result = inv_json(repo, "sync", "--adw-id", "ur", "--strategy", "rebase")
    assert result["outcome"] == "rebased"
    assert git(repo, "rev-parse", "users-own") == mine, "Grove's rebase moved the user's own branch"


def test_the_merge_queues_rebase_leaves_a_users_branch_alone_whatever_rebase_updaterefs_says(repo):
    agent(repo, "mq", {"a.txt": "1\n", "b.txt": "2\n"})
    git(repo, "branch", "users-own", "adw/mq~1")
    mine = git(repo, "rev-parse", "users-own")
    git(repo, "config", "rebase.updateRefs", "true")
    commit_file(repo, "theirs.txt", "1\n")
    summary = inv_json(repo, "merge", "--adw-id", "mq", "--strategy", "rebase")
    assert summary["results"][0]["outcome"] == "merged"
    assert git(repo, "rev-parse", "users-own") == mine, "the merge queue's rebase moved the user's own branch"


# -- 3. the private-index checkout of a new worktree ---------------------------------------------


def tracked_clean(wt: Path) -> None:
    assert git(wt, "status", "--porcelain", "--untracked-files=no") == "", git(wt, "status")
    assert (wt / "README.md").read_text() == "sample app\n"


@pytest.mark.parametrize("config", [("core.splitIndex", "true"), ("index.version", "4"),
                                    ("feature.manyFiles", "true"), ("index.skipHash", "true")])
def test_setup_under_index_configs(repo, config):
    for i in range(30):
        (repo / f"d{i % 3}" / f"f{i}.txt").parent.mkdir(exist_ok=True)
        (repo / f"d{i % 3}" / f"f{i}.txt").write_text(f"{i}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "files")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "config", *config)
    inv(repo, "setup", "--adw-id", "ix", "--no-install", check=True)
    wt = repo / "trees/ix"
    tracked_clean(wt)
    commit_file(wt, "d0/f0.txt", "changed\n")
    (wt / "d1/f1.txt").write_text("edit\n")
    assert git(wt, "status", "--porcelain", "--untracked-files=no") == "M d1/f1.txt"
    out = inv(repo, "teardown", "--adw-id", "ix", "--force", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["salvage_ref"]
    assert json.loads(inv(repo, "doctor", "--json").stdout)["problems"] == []
    git(repo, "fsck", "--no-dangling")


def test_setup_with_git_index_file_set_in_the_users_environment(repo, tmp_path):
    theirs = tmp_path / "their.index"
    git(repo, "read-tree", f"--index-output={theirs}", "HEAD")
    before = theirs.read_bytes()
    out = inv(repo, "setup", "--adw-id", "gi", "--no-install", env={"GIT_INDEX_FILE": str(theirs)})
    assert out.returncode == 0, out.stderr
    tracked_clean(repo / "trees/gi")
    assert theirs.read_bytes() == before


@pytest.mark.parametrize("where", ["my projects/app ü", "ταυτότητα"])
def test_setup_in_a_repository_whose_path_has_spaces_or_unicode(tmp_path, where, monkeypatch):
    from conftest import make_repo

    monkeypatch.setenv("ADW_BACKEND_PORT_BASE", "23100")
    monkeypatch.setenv("ADW_FRONTEND_PORT_BASE", "23150")
    app = make_repo(tmp_path / where)
    inv(app, "setup", "--adw-id", "sp", "--no-install", check=True)
    tracked_clean(app / "trees/sp")
    commit_file(app / "trees/sp", "work ü.txt", "the agent's\n")
    (app / "trees/sp/notes ü.txt").write_text("uncommitted\n")
    inv(app, "status", "--adw-id", "sp", "--set", "completed", check=True)
    # Issue 25: this ran with check=False and asserted nothing. The teardown works in such a path,
    # salvages the untracked file and keeps the unmerged branch.
    done = inv_json(app, "teardown", "--adw-id", "sp", "--force")
    assert not (app / "trees/sp").exists() and not (app / "agents/sp").exists()
    assert done["branch_action"] == "kept" and git(app, "show", "adw/sp:work ü.txt") == "the agent's"
    assert git(app, "show", f"{done['salvage_ref']}:notes ü.txt") == "uncommitted"
    assert json.loads(inv(app, "doctor", "--json").stdout)["problems"] == []


def test_setup_in_a_sparse_checkout_matches_git_worktree_add(repo):
    for name in ("keep/a.txt", "drop/b.txt"):
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text(name)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two dirs")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "sparse-checkout", "set", "keep")
    git(repo, "worktree", "add", "-q", "--detach", str(repo.parent / "plain"), "main")
    plain = sorted(str(p.relative_to(repo.parent / "plain")) for p in (repo.parent / "plain").rglob("*.txt"))
    git(repo, "worktree", "remove", "--force", str(repo.parent / "plain"))
    inv(repo, "setup", "--adw-id", "sc", "--no-install", check=True)
    wt = repo / "trees/sc"
    ours = sorted(str(p.relative_to(wt)) for p in wt.rglob("*.txt"))
    assert ours == plain
    assert git(wt, "status", "--porcelain", "--untracked-files=no") == ""


def test_setup_with_an_fsmonitor_hook(repo, tmp_path):
    hook = tmp_path / "fsmonitor.sh"
    # Protocol v2: print a token, then NUL, then "/" = "assume everything changed".
    hook.write_text('#!/bin/sh\nprintf "token\\0/\\0"\n')
    hook.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(hook))
    git(repo, "config", "core.fsmonitorHookVersion", "2")
    inv(repo, "setup", "--adw-id", "fm", "--no-install", check=True)
    tracked_clean(repo / "trees/fm")


def test_a_failing_required_smudge_filter_then_fixed_converges(repo, tmp_path):
    (repo / "big.bin").write_text("payload\n")
    (repo / ".gitattributes").write_text("*.bin filter=lfsish\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "filtered file")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "config", "filter.lfsish.smudge", "false")
    git(repo, "config", "filter.lfsish.clean", "cat")
    git(repo, "config", "filter.lfsish.required", "true")
    out = inv(repo, "setup", "--adw-id", "sf", "--no-install")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    git(repo, "config", "filter.lfsish.smudge", "cat")
    inv(repo, "doctor", "--fix")
    inv(repo, "setup", "--adw-id", "sf", "--no-install", check=True)
    wt = repo / "trees/sf"
    tracked_clean(wt)
    assert (wt / "big.bin").read_text() == "payload\n"
    assert json.loads(inv(repo, "doctor", "--json").stdout)["problems"] == []


def test_a_rerun_of_setup_never_resets_away_edits_in_a_worktree_whose_index_is_gone(repo):
    """existing() takes a worktree with no index for a checkout that never finished and resets it
    --hard. An agent's worktree whose index went missing later (a crash of a tool, the classic
    `rm index` to get past "index file corrupt") then loses its uncommitted edits to a plain
    re-run of setup (re-runs are part of the contract: they skip the steps already done)."""
    inv(repo, "setup", "--adw-id", "ni", "--no-install", check=True)
    wt = repo / "trees/ni"
    (wt / "README.md").write_text("the agent's uncommitted work\n")
    (wt / "new.txt").write_text("a new file\n")
    index = Path(git(wt, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    index.unlink()
    out = inv(repo, "setup", "--adw-id", "ni", "--no-install", "--json")
    # Issue 25: this accepted exit 0 or 1 and never looked at new.txt. The re-run succeeds, and both
    # the edit and the new file are kept: salvaged before the checkout, and new.txt left in place.
    assert out.returncode == 0, out.stderr
    (ref,) = git(repo, "for-each-ref", "--format=%(refname)", "refs/grove-salvage/ni/").split()
    assert git(repo, "show", f"{ref}:README.md") == "the agent's uncommitted work"
    assert git(repo, "show", f"{ref}:new.txt") == "a new file"
    assert (wt / "new.txt").read_text() == "a new file\n" and git(wt, "status", "--porcelain") == "?? new.txt"


def test_kill_9_during_a_pool_entrys_checkout_then_doctor_and_a_refill_converge(repo, tmp_path):
    """The pool checks its new worktrees out with a plain `git reset --hard`: a kill -9 midway leaves
    git's index.lock (the defect checkout_new's private index fixed for setup), and then every
    reading of that entry (`git read-tree` to prove it empty) fails until a human removes the lock."""
    from test_review import set_checkout_trap

    arm = set_checkout_trap(repo, tmp_path)
    arm.touch()
    crashed = subprocess.run([*cli(), "pool", "--size", "1", "--quiet"], cwd=repo, capture_output=True, text=True,
                             start_new_session=True, timeout=120)
    assert crashed.returncode == -9 and not arm.exists(), crashed.stderr
    inv(repo, "doctor", "--fix")
    again = inv(repo, "pool", "--size", "1", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [e["status"] for e in json.loads(again.stdout)["entries"]] == ["ready"]
    health = inv(repo, "doctor", "--json")
    assert health.returncode == 0 and json.loads(health.stdout)["problems"] == [], health.stdout


@pytest.mark.parametrize("tree", ["new", "existing"])
def test_kill_9_during_the_integration_worktrees_checkout_then_doctor_and_a_merge_converge(repo, tmp_path, tree):
    """The merge queue checks its integration worktree out with a plain `git reset --hard` too: a kill
    -9 of `inv merge` midway leaves git's index.lock there, and every later merge fails on it; the
    same for a kill inside a later checkout in an integration worktree that already exists."""
    from test_review import set_checkout_trap

    arm = set_checkout_trap(repo, tmp_path)
    if tree == "existing":  # a first merge makes the integration worktree (the trap is not armed)
        agent(repo, "k0", {"k0.md": "1\n"})
        inv(repo, "merge", "--adw-id", "k0", "--quiet", check=True)
    agent(repo, "km", {"km.md": "1\n", "km.txt": "behind the filter\n"})
    arm.touch()
    crashed = subprocess.run([*cli(), "merge", "--adw-id", "km", "--quiet"], cwd=repo, capture_output=True,
                             text=True, start_new_session=True, timeout=120)
    assert crashed.returncode == -9 and not arm.exists(), crashed.stderr
    inv(repo, "doctor", "--fix")
    again = inv(repo, "merge", "--adw-id", "km", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["results"][0]["outcome"] == "merged"


def test_a_validations_binary_output_is_reported_as_text(repo):
    agent(repo, "bn", {"bn.txt": "1\n"})
    validate = r"[ -e bn.txt ] || exit 0; printf 'caf\351 \000\377\376 bytes\nlast \342\202 line\n'; exit 3"
    out = inv(repo, "merge", "--adw-id", "bn", "--json", "--validate", validate)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    result = json.loads(out.stdout)["results"][0]
    assert result["exit_code"] == 3 and "last" in result["output_tail"] and "bytes" in result["output_tail"]


def test_a_nested_exec_timeout_stops_only_its_own_run(repo, tmp_path):
    """An agent's command (itself under `inv exec`, so it carries the outer run's mark) starts a
    daemon it keeps, then runs `inv exec --timeout` for another agent. The inner timeout stops the
    inner run only: not the outer command, its daemon, or the inner Grove's callers."""
    agent(repo, "outer", {}, status="created")
    agent(repo, "inner", {}, status="created")
    daemon_pid, inner_pid = tmp_path / "daemon.pid", tmp_path / "inner.pid"
    nested = shlex.join([*cli(), "exec", "--adw-id", "inner", "--timeout", "1", "--quiet", "--", "sh", "-c",
                         f"echo $$ > {inner_pid}; sleep 615"])
    script = (f"(cd / && setsid sleep 616 & echo $! > {daemon_pid}); cd {shlex.quote(str(repo))}; "
              f"{nested}; echo inner exited $?")
    out = inv(repo, "exec", "--adw-id", "outer", "--json", "--", "sh", "-c", script, timeout=120)
    pids = [read_pid(daemon_pid), read_pid(inner_pid)]
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        log = Path(json.loads(out.stdout)["results"][0]["log"]).read_text()
        assert "inner exited 1" in log, log
        assert not gone(pids[0]), "the inner run's timeout stopped the outer run's daemon"
        assert gone(pids[1])
    finally:
        kill_if_alive(*pids)


def test_setup_with_submodules_and_submodule_recurse_true(repo):
    """With the user's `submodule.recurse=true` (a common recommendation), the checkout's `reset
    --hard` recurses into submodules that the submodules step has not set up yet; git fails ("not a
    git repository: .git/worktrees/<id>/modules/...") and setup of any repo with submodules fails."""
    from test_submodules import sub_repo as make_sub_repo  # noqa: F401  (the fixture's body, called below)

    sub = make_sub_repo.__wrapped__(repo)
    git(sub, "config", "submodule.recurse", "true")
    state = inv_json(sub, "setup", "--adw-id", "sr", "--no-install")
    tree = sub / "trees/sr"
    assert state["steps"]["submodules"]["outcome"] == "done"
    assert (tree / "vendor/lib/deep/deep.txt").read_text() == "deep\n"
    assert git(tree, "status", "--porcelain") == ""
    assert git(tree / "vendor/lib", "status", "--porcelain") == ""


@pytest.mark.parametrize("strategy", ["no-ff", "squash", "rebase"])
def test_merge_of_a_repo_with_submodules_under_submodule_recurse_true(repo, strategy):
    """The merge queue's integration worktree never sets its submodules up, but its `git checkout
    --force` (and reset, merge, rebase) recurse under the user's submodule.recurse=true and fail the
    same way: nothing can be merged with --validate in such a repository."""
    from test_submodules import sub_repo as make_sub_repo  # noqa: F401

    sub = make_sub_repo.__wrapped__(repo)
    git(sub, "config", "submodule.recurse", "true")
    inv(sub, "setup", "--adw-id", "ms", "--no-install", check=True)
    commit_file(sub / "trees/ms", "x.txt", "1\n")
    inv(sub, "status", "--adw-id", "ms", "--set", "completed", check=True)
    out = inv(sub, "merge", "--adw-id", "ms", "--json", "--strategy", strategy, "--validate", "true")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["results"][0]["outcome"] == "merged"
