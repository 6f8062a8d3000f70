"""Claude Code's settings files and Grove's two hooks in them (issue 22): read, merge, recognise.

The hooks are `WorktreeCreate` and `WorktreeRemove` entries whose command runs `grove hook
claude-code` (ops/claude.py serves them). Merging keeps everything else in a settings file and is
idempotent: Grove recognises its own entries by MARK in their command.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core import locks
from ..core.errors import bad_input

EVENTS = ("WorktreeCreate", "WorktreeRemove")
MARK = "hook claude-code"  # how Grove recognises its own hook entries when merging settings
LOCAL = Path(".claude") / "settings.local.json"
PROJECT = Path(".claude") / "settings.json"
HOOK_TIMEOUT = 900  # seconds Claude Code gives the hook: a first setup installs dependencies


def _ours(group: object) -> bool:
    return isinstance(group, dict) and any(isinstance(h, dict) and MARK in str(h.get("command", ""))
                                           for h in group.get("hooks") or [])


def write_hooks(target: Path, cmd: str, skip_if_seen: tuple[Path, ...] = ()) -> list[str]:
    """Merge Grove's two hooks into the Claude Code settings file ``target``, keeping everything else
    in it; an event that already has Grove's hook (here or in ``skip_if_seen``) is left as it is.
    Returns the events added (empty: nothing changed)."""
    data = read_settings(target)
    seen = [read_settings(p) for p in skip_if_seen if p.exists()]
    hooks = data.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise bad_input(f"{target}: \"hooks\" is not an object", "fix the file, then run this again")
    added = []
    for event in EVENTS:
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise bad_input(f"{target}: hooks.{event} is not a list", "fix the file, then run this again")
        elsewhere = [g for d in seen for g in (d.get("hooks") or {}).get(event) or []]
        if any(_ours(g) for g in groups) or any(_ours(g) for g in elsewhere):
            continue
        groups.append({"hooks": [{"type": "command", "command": cmd, "timeout": HOOK_TIMEOUT}]})
        added.append(event)
    if added:
        target.parent.mkdir(parents=True, exist_ok=True)
        locks.atomic_write_text(target, json.dumps(data, indent=2) + "\n")
    return added


def read_settings(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise bad_input(f"{path} is not valid JSON",
                        "fix it (Claude Code would not read it either), then run this again") from None
    if not isinstance(data, dict):
        raise bad_input(f"{path} does not hold a JSON object")
    return data


def in_project(repo: Path) -> bool:
    """Whether the main checkout's Claude Code settings (shared or local) have Grove's hooks: then
    every worktree Grove makes gets them too (a session reads its worktree's settings)."""
    for name in (PROJECT, LOCAL):
        try:
            data = read_settings(repo / name)
        except Exception:  # noqa: BLE001 - a broken settings file is the user's; it just does not count
            continue
        groups = [g for event in EVENTS for g in ((data.get("hooks") or {}).get(event) or [])
                  if isinstance(data.get("hooks"), dict)]
        if any(_ours(g) for g in groups):
            return True
    return False
