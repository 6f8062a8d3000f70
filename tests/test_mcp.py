"""`grove mcp`, driven by the MCP SDK's own stdio client in a subprocess (issue 22, item 2)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import GROVE_BIN, commit_file, git

mcp = pytest.importorskip("mcp", reason="the `mcp` extra is not installed (requirements.txt pins it)")
anyio = pytest.importorskip("anyio")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402


def drive(repo, body, limit: float = 300.0):
    """Start `grove mcp` in ``repo`` over stdio, run ``body(session)``, close it; bounded in time."""
    params = StdioServerParameters(command=str(GROVE_BIN), args=["mcp"], cwd=str(repo), env=dict(os.environ))

    async def main():
        with anyio.fail_after(limit):
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await body(session)

    return anyio.run(main)


async def call(session, name, **arguments):
    result = await session.call_tool(name, arguments)
    return json.loads(result.content[0].text), result.isError


def test_an_agent_lifecycle_over_mcp(repo):
    async def body(session):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"setup", "list", "status", "set_status", "run", "merge", "sync", "conflicts", "teardown", "salvage",
                "pool", "events"} <= set(tools)
        assert "adw_id" in tools["setup"].inputSchema["properties"]
        s, failed = await call(session, "setup", adw_id="m1", install=False)
        assert not failed and s["adw_id"] == "m1" and s["worktree_path"] == str(repo / "trees/m1")
        # The agent runs its tests with its own ports.
        ran, failed = await call(session, "run", adw_id="m1", timeout=60,
                                 command=[sys.executable, "-c", "import os; print('port', os.environ['BACKEND_PORT'])"])
        assert not failed and ran["exit_code"] == 0 and f"port {s['backend_port']}" in ran["output"]
        assert ran["log"].startswith(str(repo / "agents/m1/logs/")) and ran["truncated"] is False
        assert set(ran) == {"adw_id", "command", "exit_code", "timed_out", "seconds", "log", "output", "truncated",
                            "cwd"}  # the shape docs/agents.md shows
        slow, failed = await call(session, "run", adw_id="m1", timeout=1,
                                  command=[sys.executable, "-c", "import time; time.sleep(60)"])
        assert failed and slow["timed_out"] is True
        commit_file(repo / "trees/m1", "feature.txt", "made over MCP\n")
        done, failed = await call(session, "set_status", adw_id="m1", set="completed", agent_id="mcp-agent")
        assert not failed and done["status"] == "completed"
        shown, _ = await call(session, "status", adw_id="m1")
        assert shown["status"] == "completed" and len(shown["commits"]) == 1
        rows, _ = await call(session, "list")
        assert [r["adw_id"] for r in rows] == ["m1"]
        uris = {str(r.uri) for r in (await session.list_resources()).resources}
        assert uris == {"grove://agents/m1/state", "grove://agents/m1/logs"}
        state = json.loads((await session.read_resource("grove://agents/m1/state")).contents[0].text)
        assert state["adw_id"] == "m1"
        logs = json.loads((await session.read_resource("grove://agents/m1/logs")).contents[0].text)
        assert len(logs["logs"]) == 2
        merged, failed = await call(session, "merge", adw_id=["m1"])
        assert not failed and merged["results"][0]["outcome"] == "merged"
        torn, failed = await call(session, "teardown", adw_id="m1", delete_branch=True)
        assert not failed and torn["worktree_removed"] == str(repo / "trees/m1") and torn["branch_action"] == "deleted"
        # Errors are tool errors carrying Grove's message, hint and exit code.
        error, failed = await call(session, "status", adw_id="m1")
        assert failed and error["exit_code"] == 2 and "no agent 'm1'" in error["error"] and error["hint"]
        bad, failed = await call(session, "setup", adw_id="../x")
        assert failed and bad["exit_code"] == 2 and "invalid adw_id" in bad["error"]
        unknown, failed = await call(session, "teardown", adw_id="m1", wipe=True)
        assert failed and unknown["exit_code"] == 2 and "wipe" in unknown["error"]
        typed, failed = await call(session, "run", adw_id="m1", command="make test")
        assert failed and typed["exit_code"] == 2 and typed["error"].startswith("run: command")
        events, _ = await call(session, "events", adw_id="m1")
        return [e["event"] for e in events]

    assert drive(repo, body)[-1] == "torn_down"
    assert git(repo, "show", "main:feature.txt") == "made over MCP"


def test_the_logs_resource_names_the_log_written_last(repo):
    """A service's log (web.log) sorts after the time-stamped run logs; "latest" is the one written last."""
    from conftest import inv
    from grove.cli.mcpserver import read_resource

    inv(repo, "setup", "--adw-id", "m2", "--no-install", check=True)
    logs = repo / "agents/m2/logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "web.log").write_text("service output\n")
    os.utime(logs / "web.log", (1_000_000_000, 1_000_000_000))
    (logs / "20261205T010000Z.log").write_text("the last run\n")
    shown = json.loads(read_resource("grove://agents/m2/logs", str(repo)))
    assert shown["latest"] == str(logs / "20261205T010000Z.log") and "the last run" in shown["tail"]
