"""`inv conflicts`: which pairs of completed branches would conflict, and in which files (issue 13).

An orchestrator reads it to re-order or re-assign work before the merge queue meets the conflict.
Nothing is checked out: each pair goes through `git merge-tree --write-tree` (git >= 2.38), which
merges in memory from the pair's own merge base. Two things keep 30 branches fast:
- a pair whose branches touch disjoint paths cannot conflict, and is skipped (a path and a file
  inside it as a directory count as touching: file/directory conflicts);
- every answer is cached by the commits it was computed from (agents/.grove/conflicts.json): a
  branch that did not move is never asked about again. The cache keeps only what the last run used.
"""

from __future__ import annotations

import itertools
import time

from ..core import git, locks, proc, state
from ..core.config import Settings
from ..core.errors import GroveError, bad_input

CACHE_VERSION = 1


def forecast(settings: Settings, epic: str | None = None) -> dict:
    """The forecast documented in docs/json.md (`inv conflicts --json`)."""
    began = time.monotonic()
    base = settings.base_branch
    base_tip = git.rev(settings.repo, f"refs/heads/{base}") or git.rev(
        settings.repo, f"refs/remotes/{settings.remote}/{base}")
    if base_tip is None:
        raise bad_input(f"base branch {base!r} does not exist locally", "pass --base NAME or set ADW_BASE_BRANCH")
    tips = _branch_tips(settings)
    agents = [s for s in (state.load(settings, i) for i in state.all_ids(settings))
              if s and s["status"] == "completed" and (not epic or s.get("epic_id") == epic) and s["branch"] in tips]
    agents.sort(key=lambda s: (s.get("completed_at") or "", s.get("created_at") or "", s["adw_id"]))
    old = _load_cache(settings)
    cache: dict = {"version": CACHE_VERSION, "files": {}, "base": {}, "pairs": {}}
    counts = {"checked": 0, "cached": 0, "skipped_disjoint": 0}

    def ask(kind: str, key: str, compute):
        if key in old.get(kind, {}):
            counts["cached"] += kind == "pairs"
            cache[kind][key] = old[kind][key]
        else:
            counts["checked"] += kind == "pairs"
            cache[kind][key] = compute()
        return cache[kind][key]

    branches, touched = [], {}
    for s in agents:
        tip = tips[s["branch"]]
        files = ask("files", f"{base_tip}:{tip}", lambda: _touched(settings, base_tip, tip))
        with_base = ask("base", f"{base_tip}:{tip}", lambda: _conflicts(settings, base_tip, tip))
        touched[s["adw_id"]] = (set(files), _prefixes(files))
        branches.append({"adw_id": s["adw_id"], "branch": s["branch"], "tip": tip, "files": len(files),
                         "conflicts_with_base": with_base})
    pairs = []
    for a, b in itertools.combinations(branches, 2):
        (files_a, dirs_a), (files_b, dirs_b) = touched[a["adw_id"]], touched[b["adw_id"]]
        if not (files_a & (files_b | dirs_b) or files_b & dirs_a):
            counts["skipped_disjoint"] += 1
            continue
        key = ":".join(sorted((a["tip"], b["tip"])))
        files = ask("pairs", key, lambda: _conflicts(settings, a["tip"], b["tip"]))
        if files:
            pairs.append({"a": a["adw_id"], "b": b["adw_id"], "branch_a": a["branch"], "branch_b": b["branch"],
                          "files": files})
    _save_cache(settings, cache)
    return {"base": base, "base_commit": base_tip, "epic_id": epic, "branches": branches, "pairs": pairs,
            **counts, "seconds": round(time.monotonic() - began, 3)}


def _branch_tips(settings: Settings) -> dict[str, str]:
    """Every local branch's tip from one `git for-each-ref`."""
    raw = git.git(settings.repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
    out = {}
    for line in filter(None, raw.split("\n")):
        sha, _, ref = line.partition(" ")
        out[ref.removeprefix("refs/heads/")] = sha
    return out


def _touched(settings: Settings, base: str, tip: str) -> list[str]:
    """Paths the branch changed since it left the base; both sides of a rename count."""
    raw = git.git(settings.repo, "diff", "--name-only", "--no-renames", "-z", f"{base}...{tip}", "--")
    return sorted(filter(None, raw.split("\0")))


def _prefixes(files: list[str]) -> set[str]:
    """Each file's parent directories ('a/b/c' -> 'a', 'a/b'): a file there conflicts with the directory."""
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return dirs


def _conflicts(settings: Settings, one: str, other: str) -> list[str]:
    """The files `git merge-tree --write-tree` reports conflicted when merging the two commits."""
    out = proc.run(["git", "-C", settings.repo, "merge-tree", "--write-tree", "--name-only", "--no-messages",
                    one, other], check=False, timeout=settings.git_timeout)
    if out.returncode == 0:
        return []
    if out.returncode == 1:
        return sorted(set(filter(None, out.stdout.split("\n")[1:])))
    raise GroveError(f"git merge-tree {one[:10]} {other[:10]} failed: {proc.tail(out.stderr)}")


def _cache_path(settings: Settings):
    return settings.grove_path / "conflicts.json"


def _load_cache(settings: Settings) -> dict:
    try:
        data = locks.read_json(_cache_path(settings), "conflict cache")
    except GroveError:
        return {}  # a corrupt cache only costs recomputing it
    return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}


def _save_cache(settings: Settings, cache: dict) -> None:
    import json

    locks.atomic_write_text(_cache_path(settings), json.dumps(cache, separators=(",", ":")) + "\n")


def print_forecast(report: dict) -> None:
    for b in report["branches"]:
        if b["conflicts_with_base"]:
            print(f"{b['adw_id']:<12} conflicts with {report['base']}: {', '.join(b['conflicts_with_base'])}")
    for p in report["pairs"]:
        print(f"{p['a']:<12} x {p['b']:<12} {', '.join(p['files'])}")
    n = len(report["branches"])
    print(f"{len(report['pairs'])} conflicting pair(s) among {n} completed branch(es) "
          f"({report['checked']} checked, {report['cached']} cached, {report['skipped_disjoint']} disjoint; "
          f"{report['seconds']:.2f}s)")
