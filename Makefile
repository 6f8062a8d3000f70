# Grove's entry points. Each target builds what it needs from nothing (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/node_modules/.bin:$(PATH)

.PHONY: help tools test demo bench clean-worktrees clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

tools:  ## build .venv (invoke, python-dotenv, filelock, pytest, uv) and .tools (bun)
	@scripts/bootstrap.sh --with-bun

test: tools  ## run the whole test suite (what CI runs)
	$(VENV)/bin/python -m pytest -q tests

demo: tools  ## set up 3 agents in a sample app, prove they are isolated, tear down
	$(VENV)/bin/python scripts/demo.py

bench: tools  ## measure Grove against the bare git/uv/bun commands; writes bench/results.json
	$(VENV)/bin/python scripts/bench.py

clean-worktrees: tools  ## tear down every Grove worktree of ADW_REPO (or this repo); keeps unmerged work
	$(VENV)/bin/inv teardown --all

clean:  ## remove Grove's own build products (.venv, .tools, .demo)
	rm -rf $(VENV) .tools .demo
