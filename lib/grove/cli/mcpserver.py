"""`grove mcp`: Grove served over MCP on stdio, with the official `mcp` SDK (the `mcp` extra, issue 22).

Tools mirror the tasks and take the flags' names as arguments (``adw_id``, ``delete_branch`` ...).
Each tool runs the task itself, `grove <task> --json ...` as a child process of this server (an
argument list, never a shell, with a timeout), and returns that task's JSON document unchanged as
its text content: the same document the task prints, by construction. A task's failure becomes an
MCP tool error (``isError``) whose text is Grove's error document ``{"error", "hint", "exit_code"}``;
a task that exits 1 with its own document (a merge with a conflict, a sync that stopped) returns
that document with ``isError`` set. `run` runs a command in the agent's worktree with its ports and
env, a timeout and bounded output (ops/execute.py ``run_bounded``).

Resources: ``grove://agents/{adw_id}/state`` (the state JSON) and ``grove://agents/{adw_id}/logs``
(the newest run log's end, and the list of logs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

TASK_TIMEOUT = 3600.0  # a setup installs dependencies, a merge validates: generous, but bounded

STR = {"type": "string"}
BOOL = {"type": "boolean"}
IDS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


@dataclass
class Tool:
    name: str
    task: str
    description: str
    args: dict = field(default_factory=dict)  # argument -> JSON schema
    required: tuple[str, ...] = ()
    negatable: tuple[str, ...] = ()  # booleans whose flag defaults to true (false -> --no-<flag>)
    fixed: tuple[str, ...] = ()  # flags always passed (status --set for set_status is not one: `set` is)

    def schema(self) -> dict:
        return {"type": "object", "properties": self.args, "required": list(self.required),
                "additionalProperties": False}


TOOLS = [
    Tool("setup", "setup", "Create ready-to-run agent worktrees: branch, ports, env files, dependencies, database "
         "(`grove setup --json`).",
         {"adw_id": IDS, "epic": STR, "task": STR, "count": {"type": "integer", "minimum": 0}, "branch": STR,
          "base": STR, "agent_id": STR, "install": BOOL, "db": BOOL, "reset_db": BOOL, "fetch": BOOL, "keep": BOOL,
          "pool": BOOL}, negatable=("install", "db", "fetch", "pool")),
    Tool("list", "list", "List agents, most recent first (`grove list --json`).",
         {"epic": STR, "status": STR, "archived": BOOL}),
    Tool("status", "status", "Show one agent's state (`grove status --json`).", {"adw_id": STR}, ("adw_id",)),
    Tool("set_status", "status", "Change an agent's status: a validated transition (`grove status --set`).",
         {"adw_id": STR, "set": STR, "agent_id": STR, "error": STR}, ("adw_id", "set")),
    Tool("merge", "merge", "Merge finished agents' branches into the base, validated, never half-applied "
         "(`grove merge --json`).",
         {"adw_id": IDS, "epic": STR, "all": BOOL, "strategy": STR, "validate": STR, "push": BOOL, "cleanup": BOOL,
          "dry_run": BOOL, "batch": BOOL, "sequential": BOOL, "base": STR}),
    Tool("sync", "sync", "Bring the base's new commits into an agent's branch (`grove sync --json`).",
         {"adw_id": STR, "strategy": STR, "fetch": BOOL}, ("adw_id",), negatable=("fetch",)),
    Tool("conflicts", "conflicts", "Forecast which completed branches conflict, and where (`grove conflicts --json`).",
         {"epic": STR, "base": STR}),
    Tool("teardown", "teardown", "Remove agent worktrees, free their ports, archive their state; nothing is lost "
         "(`grove teardown --json`).",
         {"adw_id": IDS, "all": BOOL, "delete_branch": BOOL, "force": BOOL, "keep_db": BOOL}),
    Tool("salvage", "salvage", "List salvaged uncommitted work, or restore one ref into a worktree "
         "(`grove salvage --json`).", {"adw_id": STR, "restore": STR}),
    Tool("pool", "pool", "Show the warm pool, or fill/drain it to `size` (`grove pool --json`).",
         {"size": {"type": "integer", "minimum": 0, "maximum": 100}, "base": STR, "fetch": BOOL},
         negatable=("fetch",)),
    Tool("events", "events", "The lifecycle event stream, oldest first (`grove events --json`).",
         {"since": STR, "adw_id": STR}),
]
RUN = {"type": "object", "additionalProperties": False, "required": ["adw_id", "command"],
       "properties": {"adw_id": STR, "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                      "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600}}}


def argv_for(tool: Tool, arguments: dict) -> list[str]:
    """The task's flags for ``arguments``: `--name=value` (a value starting with '-' stays a value),
    repeated for a list, `--name` / `--no-name` for booleans."""
    out = [tool.task]
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        if name == "set":
            out.append(f"--set={value}")
        elif isinstance(value, bool):
            if value:
                out.append(flag)
            elif name in tool.negatable:
                out.append(f"--no-{name.replace('_', '-')}")
        elif isinstance(value, list):
            out += [f"{flag}={v}" for v in value]
        elif value is not None:
            out.append(f"{flag}={value}")
    return out + ["--json"]


def grove_argv() -> list[str]:
    """This Grove, as a child: the same interpreter, `-m grove` (no PATH lookup)."""
    return [sys.executable, "-m", "grove"]


def call_task(argv: list[str], repo: str | None, timeout: float = TASK_TIMEOUT) -> tuple[str, bool]:
    """Run `grove ARGV` (plus --repo); (its stdout, the JSON document, and whether it failed)."""
    full = [*grove_argv(), *argv] + ([f"--repo={repo}"] if repo else [])
    try:
        out = subprocess.run(full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return _error(f"grove {argv[0]} did not finish within {timeout:.0f} s", "see `grove doctor`", 1), True
    text = out.stdout.strip()
    if out.returncode == 0 and text:
        return text, False
    try:
        json.loads(text)
        return text, True  # the task's own document (its error, or a result that needs attention)
    except ValueError:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        message = lines[0].removeprefix("grove: ") if lines else f"grove {argv[0]} exited {out.returncode}"
        hint = lines[1].strip().removeprefix("hint: ") if len(lines) > 1 else ""
        return _error(message, hint, out.returncode or 1), True


def _error(message: str, hint: str, code: int) -> str:
    return json.dumps({"error": message, "hint": hint or None, "exit_code": code})


def invalid(schema: dict | None, arguments: dict) -> str | None:
    """Why ``arguments`` do not fit the tool's input schema (exit code 2, as a bad flag), or None."""
    if schema is None:
        return None  # an unknown tool: call_tool says so
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(arguments))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def run_tool(arguments: dict, repo: str | None) -> tuple[str, bool]:
    """The `run` tool, in this process: Grove's errors become the error document."""
    from ..core import config
    from ..core.errors import GroveError
    from ..ops import execute

    try:
        settings = config.load({"repo": repo})
        result = execute.run_bounded(settings, arguments["adw_id"], list(arguments["command"]),
                                      float(arguments.get("timeout") or 600))
    except GroveError as exc:
        return _error(exc.message, exc.hint, exc.code), True
    return json.dumps(result, indent=2), result["exit_code"] != 0


def read_resource(uri: str, repo: str | None) -> str:
    """``grove://agents/{adw_id}/state`` or ``.../logs``."""
    from ..core import config, state
    from ..core.errors import bad_input
    from ..ops.execute import log_tail

    prefix = "grove://agents/"
    adw_id, _, kind = uri[len(prefix):].partition("/") if uri.startswith(prefix) else ("", "", "")
    if kind not in ("state", "logs"):
        raise bad_input(f"unknown resource {uri}", "grove://agents/{adw_id}/state or grove://agents/{adw_id}/logs")
    settings = config.load({"repo": repo})
    s = state.require(settings, adw_id)
    if kind == "state":
        return json.dumps(s, indent=2)
    logs = sorted((settings.agents_path / adw_id / "logs").glob("*.log"))
    # The one written last: run logs sort by their time stamp, but a service's (web.log) sorts after them.
    latest = max(logs, key=lambda p: p.stat().st_mtime_ns) if logs else None
    return json.dumps({"adw_id": adw_id, "logs": [str(p) for p in logs],
                       "latest": str(latest) if latest else None,
                       "tail": log_tail(latest, 16 * 1024) if latest else ""}, indent=2)


def agent_ids(repo: str | None) -> list[str]:
    from ..core import config, state

    return state.all_ids(config.load({"repo": repo}))


def build(repo: str | None):
    """The MCP server object (mcp 1.x low-level API)."""
    import anyio
    import mcp.types as types
    from mcp.server.lowlevel import Server

    from .. import __version__

    server: Server = Server("grove", version=__version__)
    by_name = {t.name: t for t in TOOLS}

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        tools = [types.Tool(name=t.name, description=t.description, inputSchema=t.schema()) for t in TOOLS]
        tools.append(types.Tool(name="run", inputSchema=RUN, description=(
            "Run a command (a list of strings, no shell) in an agent's worktree with its ports and env files; "
            "timeout in seconds (default 600); the output's last 16 KiB come back, the whole of it is in the log.")))
        return tools

    schemas = {t.name: t.schema() for t in TOOLS} | {"run": RUN}

    @server.call_tool(validate_input=False)  # validated below, so a bad argument is Grove's error document
    async def call_tool(name: str, arguments: dict) -> types.CallToolResult:
        problem = invalid(schemas.get(name), arguments or {})
        if problem:
            text, failed = _error(f"{name}: {problem}", "see the tool's input schema (tools/list)", 2), True
        elif name == "run":
            text, failed = await anyio.to_thread.run_sync(run_tool, arguments, repo)
        elif name in by_name:
            text, failed = await anyio.to_thread.run_sync(call_task, argv_for(by_name[name], arguments), repo)
        else:
            text, failed = _error(f"unknown tool {name!r}", "see the tool list", 2), True
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=failed)

    @server.list_resources()
    async def list_resources() -> list[types.Resource]:
        out = []
        for adw_id in await anyio.to_thread.run_sync(agent_ids, repo):
            for kind in ("state", "logs"):
                out.append(types.Resource(uri=f"grove://agents/{adw_id}/{kind}",  # type: ignore[arg-type]
                                          name=f"{adw_id} {kind}", mimeType="application/json"))
        return out

    @server.list_resource_templates()
    async def list_templates() -> list[types.ResourceTemplate]:
        return [types.ResourceTemplate(uriTemplate="grove://agents/{adw_id}/state", name="agent state",
                                       mimeType="application/json"),
                types.ResourceTemplate(uriTemplate="grove://agents/{adw_id}/logs", name="agent run logs",
                                       mimeType="application/json")]

    @server.read_resource()
    async def read(uri) -> str:
        from ..core.errors import GroveError

        try:
            return await anyio.to_thread.run_sync(read_resource, str(uri), repo)
        except GroveError as exc:
            raise ValueError(str(exc)) from None

    return server


def serve(repo: str | None) -> None:
    """Serve on stdin/stdout until the client closes them."""
    try:
        import anyio
        from mcp.server.stdio import stdio_server
    except ImportError:
        from ..core.errors import GroveError
        from ..core.hints import install_extra

        raise GroveError("`grove mcp` needs the MCP SDK", hint=install_extra("mcp", "mcp>=1.30,<2"), code=2) from None
    if repo:
        repo = str(Path(repo).resolve())
    server = build(repo)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    anyio.run(main)
