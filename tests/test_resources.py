"""Per-agent resources as plugins of one shape (issue 19): setup, the single-step tasks, teardown and
doctor loop over lib/grove/resources/table.py, so a resource added there is prepared, released,
checked and repaired with no operation naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GROVE, git, inv_json, settings_for
from grove.core.report import Reporter
from grove.ops import chain, cleanup, doctor, steps
from grove.resources import table
from grove.resources.shape import Agent, Found, Resource, problem

PACKAGE = GROVE / "lib" / "grove"


def test_the_table_names_each_resource_once_with_the_same_shape():
    names = [r.name for r in table.RESOURCES]
    assert len(names) == len(set(names))
    assert all(isinstance(r, Resource) for r in table.RESOURCES)
    for r in table.RESOURCES:
        assert r.prepare or r.release or r.check, f"{r.name} does nothing"
        assert bool(r.release) == bool(r.released_as), f"{r.name}: a release needs the result key it fills"
        assert bool(r.check) == bool(r.problems) == bool(r.repair), f"{r.name}: check, problems and repair go together"
    assert set(table.REPAIRS) == {kind for r in table.CHECKED for kind in r.problems}


def test_setup_records_its_steps_in_the_table_s_order(repo):
    s = inv_json(repo, "setup", "--adw-id", "t1", "--no-fetch")
    recorded = list(s["steps"])
    assert recorded[recorded.index("worktree") + 1:] == [r.name for r in table.PREPARED]
    assert recorded[:recorded.index("worktree")] == ["fetch", "ports"]  # the ports before any git work


def test_no_operation_names_a_resource_s_own_functions_for_per_agent_work():
    """The loops replaced these calls; one coming back means a resource the table does not drive."""
    named = {"chain.py": ("install_worktree(", "reset_db(", "populate(", "copy_into(", "merge_env(", "repoint_file("),
             "cleanup.py": ("ports.release(", "apply_teardown("),
             "doctor.py": ("ports.stale(", "agentdb.orphans(", "release_stale(", "drop_orphan(")}
    for name, calls in named.items():
        source = (PACKAGE / "ops" / name).read_text()
        assert [c for c in calls if c in source] == [], name


@pytest.fixture
def fake(monkeypatch):
    """A resource of the kind a plugin would add (a file in the worktree, something outside it to
    release, a leftover doctor finds), put in the table between the files and the installs."""
    calls: list[tuple] = []

    def prepare(agent: Agent):
        calls.append(("prepare", agent.adw_id, agent.path, agent.values["BACKEND_PORT"]))
        (agent.path / ".fake.conf").write_text(f"port={agent.values['BACKEND_PORT']}\n")
        return "done", "fake configured", [".fake.conf"]

    def plan_release(settings, adw_id, options):
        calls.append(("plan", adw_id, options["keep_db"]))
        return f"plan for {adw_id}"

    def release(settings, adw_id, plan):
        calls.append(("release", adw_id, plan))
        return [f"fake of {adw_id}"]

    def check(settings, found: Found):
        calls.append(("check", "t1" in found.live))
        return [problem("fake_leftover", "a fake left behind", "drop it", adw_id="ghost")]

    def repair(settings, p):
        calls.append(("repair", p["kind"], p["adw_id"]))
        p["fixed"] = True

    resource = Resource("fake", prepare, switch="files", writes_files=True, plan_release=plan_release,
                        release=release, released_as="fake_released", check=check, problems=("fake_leftover",),
                        repair=repair)
    at = [r.name for r in table.RESOURCES].index("repoint") + 1
    resources = (*table.RESOURCES[:at], resource, *table.RESOURCES[at:])
    prepared = tuple(r for r in resources if r.prepare)
    checked = tuple(r for r in resources if r.check)
    monkeypatch.setattr(table, "RESOURCES", resources)
    monkeypatch.setattr(table, "BY_NAME", {r.name: r for r in resources})
    monkeypatch.setattr(table, "PREPARED", prepared)
    monkeypatch.setattr(table, "FILES", tuple(r for r in prepared if r.writes_files))
    monkeypatch.setattr(table, "RELEASED", tuple(r for r in resources if r.release))
    monkeypatch.setattr(table, "CHECKED", checked)
    monkeypatch.setattr(table, "REPAIRS", {kind: r for r in checked for kind in r.problems})
    return calls


def test_a_resource_added_to_the_table_is_prepared_released_checked_and_repaired(repo, fake):
    settings = settings_for(repo)
    s = chain.setup(settings, chain.Request("t1", fetch=False, install=False, db=False), Reporter(quiet=True))
    wt = Path(s["worktree_path"])
    port = s["ports"]["BACKEND_PORT"]
    assert fake == [("prepare", "t1", wt, str(port))]
    assert s["steps"]["fake"]["outcome"] == "done"
    # What it wrote is hidden like every file Grove writes: an agent's `git add -A` does not take it.
    assert (wt / ".fake.conf").read_text() == f"port={port}\n"
    assert ".fake.conf" not in git(wt, "status", "--porcelain", "--untracked-files=all")

    # Asked for alone, as a CI job runs one step.
    done = steps.run_step(settings, "t1", "fake", Reporter(quiet=True))
    assert done["outcome"] == "done" and fake[-1][0] == "prepare"

    report = doctor.check(settings, fix=True)
    leftover = [p for p in report["problems"] if p["kind"] == "fake_leftover"]
    assert leftover and leftover[0]["fixed"]
    assert ("check", True) in fake and ("repair", "fake_leftover", "ghost") in fake

    inv_json(repo, "status", "--adw-id", "t1", "--set", "completed")
    result = cleanup.teardown(settings, "t1")
    assert result["fake_released"] == ["fake of t1"]
    assert fake[-2:] == [("plan", "t1", False), ("release", "t1", "plan for t1")]
    assert result["freed_slots"]  # the real resources were released by the same loop


def test_a_resource_s_refusal_in_its_plan_stops_a_teardown_before_anything_changes(repo, fake, monkeypatch):
    from grove.core.errors import GroveError

    settings = settings_for(repo)
    chain.setup(settings, chain.Request("t1", fetch=False, install=False, db=False), Reporter(quiet=True))
    inv_json(repo, "status", "--adw-id", "t1", "--set", "completed")
    fake_resource = table.BY_NAME["fake"]

    def refuse(settings, adw_id, options):
        raise GroveError("the fake's server cannot be reached")

    monkeypatch.setattr(table, "RELEASED", tuple(
        Resource(r.name, r.prepare, plan_release=refuse, release=r.release, released_as=r.released_as)
        if r is fake_resource else r for r in table.RELEASED))
    before = git(repo, "worktree", "list", "--porcelain")
    with pytest.raises(GroveError, match="cannot be reached"):
        cleanup.teardown(settings, "t1")
    assert git(repo, "worktree", "list", "--porcelain") == before
    assert inv_json(repo, "status", "--adw-id", "t1")["status"] == "completed"
