#!/usr/bin/env bash
# Build Grove's own environment from nothing: .venv with the pinned packages (uv among them) and
# Grove itself installed editable (so .venv/bin/grove and .venv/bin/inv both exist), and, with
# --with-bun, bun from the npm registry into .tools/ (--with-claude: the Claude Code CLI too). Needs only python3, git and make (npm for bun).
# Idempotent: a stamp per part skips what is already current.
set -euo pipefail
cd "$(dirname "$0")/.."

# --runtime (make demo): only what Grove runs on, not mypy, pytest or the test Postgres (issue 21).
want_bun=0
want_claude=0
requirements=requirements.txt stamp=.venv/.installed
for arg in "$@"; do
  case "$arg" in
    --with-bun) want_bun=1 ;;
    --with-claude) want_claude=1 ;;
    --runtime) requirements=requirements-runtime.txt stamp=.venv/.installed-runtime ;;
  esac
done

stale() {  # $1: a stamp; true when it is missing or older than what it was built from
  [ ! -f "$1" ] || [ requirements.txt -nt "$1" ] || [ requirements-runtime.txt -nt "$1" ] || [ pyproject.toml -nt "$1" ]
}

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The full environment holds the runtime one: a current .installed serves --runtime too.
if stale "$stamp" && { [ "$stamp" = .venv/.installed ] || stale .venv/.installed; }; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi

# bun is needed by the demo and the install tests; use one on PATH when there is one.
if [ "$want_bun" = 1 ] && ! command -v bun >/dev/null 2>&1 && [ ! -x .tools/node_modules/.bin/bun ]; then
  command -v npm >/dev/null 2>&1 || { echo "bootstrap: npm is needed to install bun (apt-get install npm)" >&2; exit 1; }
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools bun@1.4.5 >/dev/null
fi

# The Claude Code CLI, pinned, for the tests of Grove's worktree hooks (issue 22). DISABLE_AUTOUPDATER:
# the CLI otherwise updates itself into the global npm prefix.
if [ "$want_claude" = 1 ] && [ ! -x .tools/node_modules/.bin/claude ]; then
  command -v npm >/dev/null 2>&1 || { echo "bootstrap: npm is needed to install the Claude Code CLI (apt-get install npm)" >&2; exit 1; }
  mkdir -p .tools
  DISABLE_AUTOUPDATER=1 npm install --silent --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@2.1.332 >/dev/null
fi
