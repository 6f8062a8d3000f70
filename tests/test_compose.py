"""COMPOSE_PROJECT_NAME per worktree (issue 14): `docker compose up` in two worktrees never collides."""

from __future__ import annotations

import pytest

from conftest import inv

from grove.resources import compose


@pytest.mark.parametrize("repo_name, adw_id, expected", [
    ("app", "a1b2c3d4", "app-a1b2c3d4"),
    ("My.App v2", "Agent_7", "myappv2-agent_7"),
    ("__héllo--", "x-1", "hllo---x-1"),
    ("...", "abc", "abc"),  # nothing usable in the repo name: the id alone
])
def test_project_name_follows_composes_rules(repo_name, adw_id, expected):
    name = compose.project_name(repo_name, adw_id)
    assert name == expected
    assert all(c.isdigit() or c in "-_" or "a" <= c <= "z" for c in name)
    assert not name or name[0].isalnum()


def test_ids_of_one_repo_keep_distinct_names():
    ids = ["a", "b", "a-b", "a_b", "ab", "A1", "b1"]
    assert len({compose.project_name("app", i) for i in ids}) == len(ids)


def env_lines(path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_ports_env_and_env_files_get_the_project_name(repo):
    (repo / ".env").write_text("COMPOSE_PROJECT_NAME=main-checkout\nOTHER=1\n")
    inv(repo, "setup", "--adw-id", "c1", "--adw-id", "c2", "--no-install", check=True)
    for adw_id in ("c1", "c2"):
        assert f"COMPOSE_PROJECT_NAME=app-{adw_id}" in env_lines(repo / "trees" / adw_id / ".ports.env")
        merged = env_lines(repo / "trees" / adw_id / ".env")  # where Compose itself looks
        assert merged[0] == f"COMPOSE_PROJECT_NAME=app-{adw_id}" and "OTHER=1" in merged  # replaced in place


def test_the_variable_is_configurable_and_can_be_turned_off(repo):
    inv(repo, "setup", "--adw-id", "c3", "--no-install", env={"ADW_COMPOSE_PROJECT_VAR": "STACK"}, check=True)
    assert "STACK=app-c3" in env_lines(repo / "trees/c3/.ports.env")
    inv(repo, "setup", "--adw-id", "c4", "--no-install", env={"ADW_COMPOSE_PROJECT_VAR": ""}, check=True)
    assert not any("app-c4" in line for line in env_lines(repo / "trees/c4/.ports.env"))
