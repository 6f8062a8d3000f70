"""Issue 23, part 1: port leases unique across the machine (real processes, real repos).

Every test has its own machine-wide registry (conftest's ADW_PORT_REGISTRY), never the user's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import GROVE, cli, git, inv, inv_json, make_repo, port_leases, snapshot

sys.path.insert(0, str(GROVE / "lib"))
from grove.core import liveness  # noqa: E402
from grove.resources import ports  # noqa: E402


def clone_of(origin: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(where)], check=True, capture_output=True)
    (where / ".gitignore").write_text("/trees/\n/agents/\n.ports.env\n")
    git(where, "add", ".gitignore")
    git(where, "commit", "-q", "-m", "ignore")
    return where


def start(repo: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*cli(), *args], cwd=repo, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out.append((p.returncode, stdout, stderr))
    return out


def registry() -> Path:
    return Path(os.environ["ADW_PORT_REGISTRY"])


def all_leases() -> list[dict]:
    return json.loads(registry().read_text())["leases"]


def test_two_clones_setting_up_the_same_id_at_once_get_different_ports(repo, tmp_path):
    """The bug of issue 23: 9101/9201 for fix-login in both clones."""
    other = clone_of(tmp_path / "origin.git", tmp_path / "clone2")
    procs = [start(r, "setup", "--adw-id", "fix-login", "--no-install", "--json") for r in (repo, other)]
    results = finish(procs)
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    states = [json.loads(out) for _, out, _ in results]
    first, second = (set(s["ports"].values()) for s in states)
    assert first and second and not first & second, states
    assert {s["slot"] for s in states} == {ports.preferred_slot("fix-login", 15),
                                           (ports.preferred_slot("fix-login", 15) + 1) % 15}
    leases = all_leases()
    assert sorted(lease["repo"] for lease in leases) == sorted(str((r / ".git").resolve()) for r in (repo, other))
    for lease in leases:  # the holder: pid and start time, never a pid alone
        assert isinstance(lease["pid"], int) and isinstance(lease["pid_started"], str)
    # Each clone's .ports.env has its own ports.
    for r, s in zip((repo, other), states):
        assert f"BACKEND_PORT={s['backend_port']}" in (r / "trees/fix-login/.ports.env").read_text()


def test_three_repositories_twenty_agents_each_at_once_with_no_configuration(tmp_path, monkeypatch):
    """60 agents on one machine with the default ports: 15 in the slots, the rest in the overflow range."""
    for key in ("ADW_BACKEND_PORT_BASE", "ADW_FRONTEND_PORT_BASE"):
        monkeypatch.delenv(key, raising=False)
    repos = [make_repo(tmp_path / f"r{n}") for n in range(3)]
    procs = []
    for n, r in enumerate(repos):  # two processes per repository, ten agents each, all six at once
        for half in range(2):
            ids = [x for i in range(10) for x in ("--adw-id", f"a{half}{i}")]
            procs.append(start(r, "setup", *ids, "--no-install", "--no-db", "--quiet", "--json"))
    results = finish(procs)
    assert [code for code, _, _ in results] == [0] * 6, [err[-800:] for code, _, err in results if code]
    states = [s for _, out, _ in results for s in json.loads(out)["agents"]]
    assert len(states) == 60
    sets = [tuple(sorted(s["ports"].values())) for s in states]
    every = [p for ports_ in sets for p in ports_]
    assert len(set(sets)) == 60 and len(set(every)) == 120, "every port of every agent is its own"
    assert not [p for p in every if ports.port_busy(p)], "and free: nothing listens on them"
    seed = set(range(9100, 9115)) | set(range(9200, 9215))
    overflow = [s for s in states if s["slot"] >= 15]
    assert len(overflow) >= 45 and all(9300 <= p <= 9999 and p not in seed for s in overflow for p in s["ports"].values())
    assert all(set(s["ports"].values()) <= seed for s in states if s["slot"] < 15)
    assert len(all_leases()) == 60
    # The leases and each worktree's .ports.env agree.
    for r in repos:
        for slot, lease in port_leases(r).items():
            text = (r / "trees" / lease["adw_id"] / ".ports.env").read_text()
            assert f"BACKEND_PORT={lease['ports']['BACKEND_PORT']}\n" in text
    # Teardown releases: one agent of each repository.
    for r in repos:
        inv(r, "teardown", "--adw-id", "a00", "--force", check=True)
    assert len(all_leases()) == 57


def test_a_corrupt_registry_or_a_newer_one_is_bad_input_and_changes_nothing(repo):
    inv(repo, "setup", "--adw-id", "keep", "--no-install", check=True)
    for text in ("{torn", json.dumps({"version": 2, "leases": []}), json.dumps({"version": 1, "leases": [{"x": 1}]}),
                 "[]", "null"):
        registry().write_text(text)
        before = snapshot(repo)
        for args in (["setup", "--adw-id", "new", "--no-install"], ["ports.claim", "--adw-id", "keep"],
                     ["teardown", "--adw-id", "keep", "--force"]):
            out = inv(repo, *args)
            assert out.returncode == 2, (text, args, out.stderr)
            assert str(registry()) in out.stderr and "Traceback" not in out.stderr
            error = [line for line in out.stderr.strip().splitlines() if not line.startswith("✗")]  # progress
            assert len(error) <= 2, out.stderr
        assert snapshot(repo) == before and registry().read_text() == text


def test_a_newer_registry_says_so(repo):
    registry().write_text(json.dumps({"version": 7, "leases": []}))
    out = inv(repo, "setup", "--adw-id", "n1", "--no-install")
    assert out.returncode == 2 and "newer Grove (version 7" in out.stderr


def _foreign_lease(tmp_path: Path, slot_ports: dict[str, int], pid: int, start: str | None, slot: int) -> dict:
    other = tmp_path / "other-repo/.git"
    other.mkdir(parents=True, exist_ok=True)
    return {"repo": str(other), "checkout": str(other.parent), "adw_id": "ghost", "slot": slot,
            "ports": slot_ports, "worktree": str(other.parent / "trees/ghost"),
            "state": str(other.parent / "agents/ghost/adw_state.json"), "pid": pid, "pid_started": start,
            "leased_at": "2026-01-01T00:00:00Z"}


def test_a_lease_whose_holder_pid_was_reused_is_reclaimed(repo, tmp_path):
    """A live pid with another start time is not the holder (issue 20): its lease is free to take."""
    base = int(os.environ["ADW_BACKEND_PORT_BASE"])
    front = int(os.environ["ADW_FRONTEND_PORT_BASE"])
    slot = ports.preferred_slot("p1", 15)
    held = {"BACKEND_PORT": base + slot, "FRONTEND_PORT": front + slot}
    me = os.getpid()
    real = liveness.started(me)
    assert real is not None
    # First with the true start time: the holder lives, p1 moves to the next slot.
    registry().write_text(json.dumps({"version": 1, "leases": [_foreign_lease(tmp_path, held, me, real, slot)]}))
    assert inv_json(repo, "setup", "--adw-id", "p1", "--no-install")["slot"] == (slot + 1) % 15
    inv(repo, "teardown", "--adw-id", "p1", "--force", check=True)
    # Then the same live pid with another start time: reused, so the lease is stale and taken.
    reused = real.rsplit(":", 1)[0] + ":1"  # started at tick 1 of this boot: not this process
    registry().write_text(json.dumps({"version": 1, "leases": [_foreign_lease(tmp_path, held, me, reused, slot)]}))
    state = inv_json(repo, "setup", "--adw-id", "p1", "--no-install")
    assert state["slot"] == slot and state["backend_port"] == base + slot
    assert [lease["adw_id"] for lease in all_leases()] == ["p1"]


def test_doctor_fix_in_any_repository_reclaims_leases_whose_repository_or_worktree_is_gone(repo, tmp_path):
    gone_repo = _foreign_lease(tmp_path, {"BACKEND_PORT": 9301, "FRONTEND_PORT": 9302}, 1, None, 15)
    gone_repo["repo"] = str(tmp_path / "deleted/.git")
    gone_tree = _foreign_lease(tmp_path, {"BACKEND_PORT": 9303, "FRONTEND_PORT": 9304}, os.getpid(), "linux:x:1", 16)
    explicit = dict(_foreign_lease(tmp_path, {"BACKEND_PORT": 9305, "FRONTEND_PORT": 9306}, 1, None, 17),
                    adw_id="mine", explicit=True)
    registry().write_text(json.dumps({"version": 1, "leases": [gone_repo, gone_tree, explicit]}))
    out = inv(repo, "doctor", "--json")
    problems = [p for p in json.loads(out.stdout)["problems"] if p["kind"] == "dead_claim"]
    assert out.returncode == 1 and sorted(p["reason"] for p in problems) == ["repository gone", "worktree gone"]
    out = inv(repo, "doctor", "--fix", "--json")
    assert out.returncode == 0, out.stdout
    assert [lease["adw_id"] for lease in all_leases()] == ["mine"], "a lease taken on its own holds until released"


def test_per_repo_claims_migrate_on_first_use_and_no_live_agent_changes_ports(repo):
    # An agent set up by an older Grove: its claim in agents/.grove/ports.json, none in the machine's.
    inv(repo, "setup", "--adw-id", "old", "--no-install", check=True)
    state = json.loads((repo / "agents/old/adw_state.json").read_text())
    legacy = repo / "agents/.grove/ports.json"
    legacy.write_text(json.dumps({"version": 1, "claims": {str(state["slot"]): {"adw_id": "old", "pid": 1}}}))
    registry().unlink()
    # A new agent whose preferred slot is old's must not get old's ports.
    clash = next(f"n{i}" for i in range(1000) if ports.preferred_slot(f"n{i}", 15) == state["slot"])
    new = inv_json(repo, "setup", "--adw-id", clash, "--no-install")
    assert not set(new["ports"].values()) & set(state["ports"].values())
    assert not legacy.exists() and legacy.with_name("ports.json.migrated").exists()
    leases = port_leases(repo)
    assert leases[str(state["slot"])]["adw_id"] == "old" and leases[str(state["slot"])]["ports"] == state["ports"]
    again = inv_json(repo, "setup", "--adw-id", "old", "--no-install")
    assert again["ports"] == state["ports"], "a live agent's ports never change"


def test_extra_ports_go_through_the_lease_and_the_overflow(repo, tmp_path):
    """ADW_EXTRA_PORTS: leased too; an overflow slot's block holds all three ports."""
    base = int(os.environ["ADW_BACKEND_PORT_BASE"])
    env = {"ADW_EXTRA_PORTS": f"DB_PORT={base + 20}", "ADW_PORT_SLOTS": "1",
           "ADW_PORT_OVERFLOW": f"{base + 70}-{base + 79}"}
    states = [inv_json(repo, "setup", "--adw-id", f"x{i}", "--no-install", env=env) for i in range(4)]
    assert [sorted(s["ports"]) for s in states] == [["BACKEND_PORT", "DB_PORT", "FRONTEND_PORT"]] * 4
    assert [s["slot"] for s in states] == [0, 1, 2, 3]
    assert states[1]["ports"] == {"BACKEND_PORT": base + 70, "FRONTEND_PORT": base + 71, "DB_PORT": base + 72}
    assert states[3]["ports"]["DB_PORT"] == base + 78
    out = inv(repo, "setup", "--adw-id", "x4", "--no-install", env=env)  # 10 ports hold 3 sets of 3
    assert out.returncode == 1 and "no free slot" in out.stderr
    assert port_leases(repo)["2"]["ports"] == states[2]["ports"]


BAD_CONFIG = [
    ({"ADW_PORT_REGISTRY": "relative/ports.json"}, "ADW_PORT_REGISTRY='relative/ports.json' must be an absolute path"),
    ({"ADW_PORT_OVERFLOW": "9300"}, "is not LOW-HIGH"),
    ({"ADW_PORT_OVERFLOW": "9999-9300"}, "the high end is below the low end"),
    ({"ADW_PORT_OVERFLOW": "80-9000"}, "outside 1024..65535"),
    ({"ADW_MAX_RUNNING": "0"}, "ADW_MAX_RUNNING=0 is outside"),
    ({"ADW_MAX_RUNNING": "lots"}, "not a whole number"),
    ({"ADW_PROCFILE": "../Procfile"}, "must be a relative path inside"),
]


def test_bad_lease_and_service_config_exits_2_and_changes_nothing(repo):
    for env, message in BAD_CONFIG:
        before = snapshot(repo)
        out = inv(repo, "setup", "--adw-id", "cfg", "--no-install", env=env)
        assert out.returncode == 2 and message in out.stderr, (env, out.stderr)
        assert snapshot(repo) == before and not registry().exists()


def test_a_registry_in_a_place_grove_cannot_write_is_bad_input(repo):
    out = inv(repo, "setup", "--adw-id", "w1", "--no-install", env={"ADW_PORT_REGISTRY": "/proc/1/grove/ports.json"})
    assert out.returncode == 2 and "cannot use the port lease registry /proc/1/grove/ports.json" in out.stderr
    assert "Traceback" not in out.stderr and not (repo / "trees/w1").exists()
    assert "validate   failed" in out.stderr, "refused at validation, before the fetch"
