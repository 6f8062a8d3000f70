# Grove's entry points. Each target builds what it needs from nothing (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/node_modules/.bin:$(PATH)
SEED ?=
RUNS ?= 300
STEPS ?= 40

ONLY ?=

.PHONY: help venv tools test typecheck mutate mutate-ci fuzz demo bench clean-worktrees clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv:  ## build .venv: pinned invoke, python-dotenv, pytest, uv, mypy, and Grove (editable)
	@scripts/bootstrap.sh

tools:  ## venv, plus bun and the Claude Code CLI in .tools (for the demo, the install and the hook tests)
	@scripts/bootstrap.sh --with-bun --with-claude

test: tools typecheck  ## run the type check, the whole test suite and the CI subset of the mutation check (what CI runs)
	$(VENV)/bin/python -m pytest -q tests
	$(VENV)/bin/python scripts/mutate.py --ci

mutate: tools  ## the mutation check: every mutation of the safety code (tests/mutations.py) must be killed [ONLY="id ..."]
	$(VENV)/bin/python scripts/mutate.py $(if $(ONLY),--only $(ONLY))

mutate-ci: tools  ## the bounded subset `make test` runs: mechanisms touched last (git log), plus a few rotating by day
	$(VENV)/bin/python scripts/mutate.py --ci

typecheck: venv  ## mypy over every module of the package and scripts/ (the public API fully annotated; py.typed ships)
	$(VENV)/bin/mypy

fuzz: tools  ## long model-based run of the safety invariants: make fuzz RUNS=300 [SEED=123] [STEPS=60]
	GROVE_FUZZ_SEED=$(SEED) GROVE_FUZZ_RUNS=$(RUNS) GROVE_FUZZ_CONCURRENT_RUNS=$(RUNS) GROVE_FUZZ_STEPS=$(STEPS) $(VENV)/bin/python -m pytest -q tests/test_model.py tests/test_model_concurrent.py -p no:cacheprovider

demo:  ## the whole story on a sample app: setup, grove exec, merge with a conflict, sync + fix, teardown
	@scripts/bootstrap.sh --with-bun --runtime
	$(VENV)/bin/python scripts/demo.py

bench: tools  ## measure Grove against the bare git/uv/bun commands; writes bench/results.json
	$(VENV)/bin/python scripts/bench.py

clean-worktrees: venv  ## tear down every completed, merged or failed agent of ADW_REPO (or this repo); nothing is lost
	$(VENV)/bin/grove teardown --all

clean:  ## remove Grove's own build products (.venv, .tools, .demo)
	rm -rf $(VENV) .tools .demo
