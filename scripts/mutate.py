#!/usr/bin/env python3
"""The mutation check of the safety code (issue 25): `make mutate`, `make mutate-ci`.

Each mutation of tests/mutations.py is applied, one at a time, to a scratch copy of this checkout;
the tests named for it run there, with this checkout's venv but ``PYTHONPATH=<scratch>/lib`` so
every `grove`/`inv` subprocess the tests spawn loads the mutated code too (checked before the
run: a canary in the scratch copy must show up in both front doors). A mutation must make one of
its tests fail ("killed"); one that passes them all "SURVIVED", and the run exits 1. The named
tests are first run on an unmutated copy: a test that fails there proves nothing ("broken").

    scripts/mutate.py                 every mutation
    scripts/mutate.py --ci            the bounded subset CI runs (see select_ci)
    scripts/mutate.py --only ID ...   the named ones;  --list  prints the list
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".venv", ".tools", ".git", ".demo", "__pycache__", ".pytest_cache", "bench",
                              ".mypy_cache", "*.pyc")
TIMEOUT = 900  # a mutant that hangs its tests counts as killed, by the timeout
CANARY = "GROVE-MUTATION-CANARY"


def load(path: Path = ROOT / "tests" / "mutations.py") -> list[dict]:
    return runpy.run_path(str(path))["MUTATIONS"]


def copy_checkout(dest: Path, source: Path = ROOT) -> Path:
    shutil.copytree(source, dest, ignore=SKIP, symlinks=True)
    return dest


def apply(scratch: Path, mutation: dict) -> None:
    """Replace each ``find`` (exactly one occurrence, or the list is stale) with its ``replace``."""
    for find, replace in mutation["edits"]:
        target = scratch / mutation["file"]
        text = target.read_text()
        count = text.count(find)
        if count != 1:
            raise ValueError(f"{mutation['id']}: {mutation['file']} holds its snippet {count} times, not once "
                             f"(the code changed: update tests/mutations.py):\n{find}")
        target.write_text(text.replace(find, replace))


def env_for(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    # As the Makefile runs the suite: this venv's tools (uv, grove) and bun from .tools first.
    tools = [str(Path(sys.executable).parent), str(ROOT / ".tools" / "node_modules" / ".bin")]
    env["PATH"] = os.pathsep.join([*tools, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(scratch / "lib"), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_front_doors(scratch: Path) -> None:
    """Both front doors the tests use must load the scratch copy's code, not this checkout's."""
    init = scratch / "lib" / "grove" / "__init__.py"
    original = init.read_text()
    init.write_text(original + f"\nimport sys as _s\nprint({CANARY!r}, file=_s.stderr)\n")
    try:
        bindir = Path(sys.executable).parent
        for argv in ([str(bindir / "grove"), "--list"], [str(bindir / "inv"), "-r", str(scratch), "--list"],
                     [sys.executable, "-c", "import grove"]):
            out = subprocess.run(argv, cwd=scratch, env=env_for(scratch), capture_output=True, text=True, timeout=120)
            if CANARY not in out.stderr:
                sys.exit(f"mutate: {' '.join(argv[:2])} does not load the scratch copy's code "
                         f"(PYTHONPATH={scratch / 'lib'}); the mutations would prove nothing")
    finally:
        init.write_text(original)


def run_tests(scratch: Path, tests: list[str], stop_first: bool) -> tuple[str, list[str], float]:
    """('passed' | 'failed' | 'timeout', failing node ids, seconds)."""
    report = scratch / ".mutate-junit.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
            *(["-x"] if stop_first else []), *tests]
    started = time.monotonic()
    try:
        out = subprocess.run(argv, cwd=scratch, env=env_for(scratch), capture_output=True, text=True,
                             timeout=TIMEOUT, start_new_session=True)
    except subprocess.TimeoutExpired:
        return "timeout", [], time.monotonic() - started
    seconds = time.monotonic() - started
    failing = _failing(report)
    if out.returncode == 0:
        return "passed", [], seconds
    if not failing:  # a collection error, a bad node id: say so rather than count it as a kill
        failing = ["(pytest exited %d) %s" % (out.returncode, (out.stdout + out.stderr).strip()[-400:])]
    return "failed", failing, seconds


def _failing(report: Path, with_message: bool = False) -> list[str]:
    try:
        tree = ET.parse(report)
    except (OSError, ET.ParseError):
        return []
    found = []
    for case in tree.iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            path = case.get("classname", "").replace(".", "/") + ".py"
            said = (problem.get("message") or "").splitlines()[:1] if with_message else []
            found.append(" -- ".join([f"{path}::{case.get('name')}", *said]))
    return found


def baseline(root: Path, mutations: list[dict]) -> dict[str, list[str]]:
    """Run every named test once on an unmutated copy; returns the failing ones (node id -> detail)."""
    tests = sorted({t for m in mutations for t in m["tests"]})
    scratch = copy_checkout(root / "baseline", root / "pristine")
    check_front_doors(scratch)
    outcome, failing, seconds = run_tests(scratch, tests, stop_first=False)
    print(f"baseline: {len(tests)} tests on the unmutated code: {outcome} ({seconds:.0f} s)", flush=True)
    if outcome == "timeout":
        sys.exit("mutate: the unmutated tests timed out; nothing can be concluded")
    for line in _failing(scratch / ".mutate-junit.xml", with_message=True):
        print(f"baseline: {line[:300]}", flush=True)  # why, since it proves nothing
    return {f: [f] for f in failing}


def run_one(root: Path, mutation: dict, broken: dict[str, list[str]]) -> dict:
    row = {"id": mutation["id"], "mechanism": mutation["mechanism"], "outcome": "", "by": "", "seconds": 0.0}
    tests = [t for t in mutation["tests"] if not any(_same(t, b) for b in broken)]
    if not tests:
        row.update(outcome="broken", by="its tests fail on the unmutated code")
        return row
    scratch = copy_checkout(root / mutation["id"], root / "pristine")
    try:
        apply(scratch, mutation)
    except ValueError as exc:
        row.update(outcome="stale", by=str(exc).splitlines()[0])
        return row
    outcome, failing, row["seconds"] = run_tests(scratch, tests, stop_first=True)
    shutil.rmtree(scratch, ignore_errors=True)
    if outcome == "passed":
        row.update(outcome="SURVIVED", by="")
    elif outcome == "timeout":
        row.update(outcome="killed", by=f"(timeout after {TIMEOUT} s)")
    else:
        row.update(outcome="killed", by=failing[0])
    return row


def _same(test: str, failing: str) -> bool:
    """A node id names a test or a whole file/parametrization: match by prefix."""
    return failing == test or failing.startswith(test + "[") or failing.startswith(test.rstrip(":") + "::") or \
        test.startswith(failing + "::") or test.startswith(failing + "[")  # not test_x_y for a failing test_x


# -- the CI subset ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def last_touched(file: str) -> int:
    """When git last changed ``file`` (0 without git history: a shallow or exported copy)."""
    out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct", "--", file],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def select_ci(mutations: list[dict], recent: int, rotating: int, day: int | None = None) -> list[dict]:
    """One mutation of each of the ``recent`` most recently touched mechanisms (by git log of their
    files), plus ``rotating`` more taken in turn by the day of the year, so the whole list comes
    round every few days."""
    by_mechanism: dict[str, list[dict]] = {}
    for m in mutations:
        by_mechanism.setdefault(m["mechanism"], []).append(m)
    day = datetime.date.today().toordinal() if day is None else day
    stamp = {name: max(last_touched(m["file"]) for m in ms) for name, ms in by_mechanism.items()}
    newest = sorted(by_mechanism, key=lambda name: (-stamp[name], name))[:recent]
    chosen = [by_mechanism[name][day % len(by_mechanism[name])] for name in newest]
    rest = [m for m in mutations if m not in chosen]
    if rest:
        start = (day * rotating) % len(rest)
        chosen += [rest[(start + i) % len(rest)] for i in range(min(rotating, len(rest)))]
    return chosen


def table(rows: list[dict]) -> str:
    heads = ("mutation", "mechanism", "outcome", "killing test", "s")
    cells = [[r["id"], r["mechanism"], r["outcome"], r["by"], f"{r['seconds']:.0f}"] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    line = lambda values: " | ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), "-+-".join("-" * w for w in widths), *(line(c) for c in cells)])


def markdown(mutations: list[dict]) -> str:
    """The table of docs/mutations.md."""
    lines = ["| mutation | mechanism | file | the bug | killed by |", "|---|---|---|---|---|"]
    for m in mutations:
        tests = ", ".join(f"`{Path(t.split('::')[0]).name}::{t.split('::')[1]}`" for t in m["tests"])
        lines.append(f"| `{m['id']}` | {m['mechanism']} | `{m['file']}` | {m['why']} | {tests} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="the bounded subset CI runs")
    parser.add_argument("--recent", type=int, default=5, help="with --ci: mechanisms by most recent change")
    parser.add_argument("--rotating", type=int, default=3, help="with --ci: more mutations, rotating by day")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--markdown", action="store_true", help="print the table of docs/mutations.md and exit")
    parser.add_argument("--tests", nargs="+", metavar="NODE",
                        help="run these tests against the mutations instead of their own (does another test kill it?)")
    args = parser.parse_args(argv)
    mutations = load()
    ids = [m["id"] for m in mutations]
    if len(set(ids)) != len(ids):
        sys.exit("mutate: tests/mutations.py repeats an id")
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            print(f"mutate: no mutation {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m["id"] in args.only]
    elif args.ci:
        mutations = select_ci(mutations, args.recent, args.rotating)
    if args.tests:
        mutations = [dict(m, tests=args.tests) for m in mutations]
    if args.markdown:
        print(markdown(mutations))
        return 0
    if args.list:
        for m in mutations:
            print(f"{m['id']}\t{m['mechanism']}\t{m['file']}\t{m['why']}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="grove-mutate-"))
    try:
        copy_checkout(root / "pristine")  # one snapshot: edits made while the run goes on do not leak in
        broken = baseline(root, mutations)
        rows = []
        for m in mutations:
            rows.append(run_one(root, m, broken))
            r = rows[-1]
            print(f"{r['id']}: {r['outcome']} {r['by']} ({r['seconds']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(rows))
    bad = [r for r in rows if r["outcome"] != "killed"]
    if bad:
        print(f"\n{len(bad)} of {len(rows)} mutations not killed: {', '.join(r['id'] for r in bad)}", file=sys.stderr)
        return 1
    if broken:  # a test that fails on the unmutated code proves nothing, even where others killed
        print(f"\n{len(broken)} named tests fail on the unmutated code: {', '.join(broken)}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} mutations killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
