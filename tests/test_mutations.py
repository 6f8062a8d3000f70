"""The mutation list itself (issue 25): cheap checks that run in every `make test`, so a mutation
whose code moved or whose test was renamed is noticed at once, not at the next `make mutate`."""

from __future__ import annotations

import ast
import sys

from conftest import GROVE

sys.path.insert(0, str(GROVE / "scripts"))
import mutate  # noqa: E402

MUTATIONS = mutate.load()
# The mechanisms issue 25 asks the list to cover; a mechanism added later comes with its mutation.
REQUIRED = {"ownership", "backup refs", "branch deletion", "salvage", "salvage --restore", "atomic writes", "locks",
            "port probe", "port claims", "liveness", "pool claim", "merge CAS", "merge report", "user's checkout",
            "private index", "model checker", "crash-safe checkouts", "archive", "database dumps", "pool refresh"}


def test_every_mechanism_has_a_mutation_and_ids_are_unique():
    assert REQUIRED <= {m["mechanism"] for m in MUTATIONS}
    ids = [m["id"] for m in MUTATIONS]
    assert len(ids) == len(set(ids))


def test_every_snippet_is_in_the_code_exactly_once_and_the_mutant_still_parses():
    for m in MUTATIONS:
        text = (GROVE / m["file"]).read_text()
        for find, replace in m["edits"]:
            assert text.count(find) == 1, f"{m['id']}: its snippet is in {m['file']} {text.count(find)} times"
            text = text.replace(find, replace)
        ast.parse(text)  # a mutant that does not even import would be "killed" for nothing


def test_every_named_test_exists():
    for m in MUTATIONS:
        assert m["tests"], m["id"]
        for node in m["tests"]:
            path, _, name = node.partition("::")
            tree = ast.parse((GROVE / path).read_text())
            defined = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
            assert name.split("[")[0] in defined, f"{m['id']}: {node} does not exist"


def test_the_ci_subset_is_bounded_and_rotates():
    days = [mutate.select_ci(MUTATIONS, 5, 3, day=d) for d in range(40)]
    assert all(len(chosen) == 8 and len({m["id"] for m in chosen}) == 8 for chosen in days)
    assert {m["id"] for chosen in days for m in chosen} == {m["id"] for m in MUTATIONS}, "all come round"


def test_docs_list_every_mutation():
    assert mutate.markdown(MUTATIONS) in (GROVE / "docs/mutations.md").read_text(), \
        "regenerate the table: scripts/mutate.py --markdown"
