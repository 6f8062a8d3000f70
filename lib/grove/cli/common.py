"""What every task shares: flag help, loading settings, the error guard, printing results.

Imports here stay light (Invoke and the standard library): `grove --list` imports this module."""

from __future__ import annotations

import functools
import gc as _gc
import json as _json

from invoke import Exit

REPO = "target repository (default: ADW_REPO, else the git top level of the current directory)"
JSON = "print exactly one JSON document on stdout (progress stays on stderr)"
QUIET = "no progress lines on stderr; errors and warnings still show, and the result still goes to stdout"
ID = "agent id: 1-64 ASCII letters, digits, '-' or '_'"


def guard(body):
    """Turn a GroveError into Invoke's Exit with its code; with --json, the error is the document."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        from ..core.errors import GroveError

        try:
            return body(c, *args, **kwargs)
        except GroveError as exc:
            if kwargs.get("json"):
                print(_json.dumps({"error": exc.message, "hint": exc.hint or None, "exit_code": exc.code}))
            raise Exit(f"grove: {exc}", code=exc.code) from None
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM where Grove turns it into one): --json still prints its one document
            # (issue 20, item 14c); 130 as a shell reports SIGINT.
            if kwargs.get("json"):
                print(_json.dumps({"error": "interrupted (Ctrl-C or SIGTERM)", "hint": None, "exit_code": 130}))
            raise Exit("grove: interrupted", code=130) from None
        finally:
            # Interpreter shutdown walks every object the imports made (Invoke's alone cost a bare
            # `inv` ~17 ms); frozen objects are skipped, so a setup exits ~25 ms sooner (issue 12).
            # Only the cyclic collector is affected: a later task in the same run still runs.
            _gc.freeze()

    return wrapper


def load_settings(c, repo=None, **flags):
    from ..core import config

    grove = c.config.get("grove") or {}
    return config.load({"repo": repo, **flags}, invoke_config=dict(grove))


def reporter(quiet=False):
    from ..core.report import Reporter

    return Reporter(quiet=quiet)


def emit(data, json: bool, human) -> None:
    if json:
        print(rows_json(data) if isinstance(data, list) else _json.dumps(data, indent=2, default=str))
    else:
        human(data)


def rows_json(rows: list) -> str:
    """A list as one row per line: json's C encoder does each row, where indent=2 would send the
    whole document through the pure-Python one (20 ms for 100 agents, issue 12)."""
    if not rows:
        return "[]"
    return "[\n" + ",\n".join(_json.dumps(r, default=str) for r in rows) + "\n]"


def one(adw_id):
    """``--adw-id`` is repeatable on some tasks; those that act on one agent take the last."""
    if isinstance(adw_id, list):
        adw_id = adw_id[-1] if adw_id else None
    if not adw_id:
        from ..core.errors import bad_input

        raise bad_input("--adw-id is required")
    return adw_id
