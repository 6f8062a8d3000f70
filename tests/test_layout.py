"""Grove's layout (issue 19): layers that depend only downwards, and no import cycle inside `grove`.

An AST walk over lib/grove: every `import` and `from ... import`, at module level or inside a
function (a deferred import still makes a cycle, only a later one), resolved to the module it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import GROVE

PACKAGE = GROVE / "lib" / "grove"
# What each layer may import besides itself, lowest first. The top level (the seed's API, models,
# `python -m grove`) and the CLI stand on everything.
MAY_IMPORT = {
    "core": set(),
    "safety": {"core"},
    "resources": {"core", "safety"},
    "ops": {"core", "safety", "resources"},
    "cli": {"core", "safety", "resources", "ops", ""},
    "": {"core", "safety", "resources", "ops", "cli"},
}


def module_name(path: Path) -> str:
    parts = ["grove", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The grove modules ``name`` imports: ``from .x import y`` counts as x.y when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from where it was entered)."""
    found, state = [], {}  # state: 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else ""


def test_there_is_no_import_cycle_inside_grove():
    assert cycles(graph()) == []


def test_layers_depend_only_downwards():
    wrong = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                   if layer(b) != layer(a) and layer(b) not in MAY_IMPORT[layer(a)] and b != "grove")
    assert wrong == []


def test_the_listing_shows_the_layers():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "core", "safety", "resources", "ops", "cli"}
    for sub in ("core", "safety", "resources", "ops", "cli"):
        doc = ast.get_docstring(ast.parse((PACKAGE / sub / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{sub}/__init__.py must say what lives there and what it may import"


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_the_import_reader_sees_deferred_and_relative_imports(tmp_path):
    known = {"grove.core.a": tmp_path / "a.py", "grove.core.b": tmp_path / "b.py", "grove.ops.c": tmp_path / "c.py"}
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n    from ..ops.c import thing\n")
    assert imports_of("grove.core.a", tmp_path / "a.py", known) == {"grove.core.b", "grove.ops.c"}


def test_paths_derived_from_a_module_s_place_still_find_the_checkout_and_the_package():
    """Moving a module one folder down must not move what it derives from ``__file__``."""
    from grove.core import config
    from grove.ops import pool

    assert config.GROVE_DIR == GROVE
    source = Path(pool.__file__).read_text()
    assert "parents[2]" in source and Path(pool.__file__).resolve().parents[2] == PACKAGE.parent
    uses = [p for p in PACKAGE.rglob("*.py") if "__file__" in p.read_text()]
    assert sorted(p.name for p in uses) == ["config.py", "pool.py"], "a new use: add it to this test"
