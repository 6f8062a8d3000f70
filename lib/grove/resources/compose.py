"""The Docker Compose project name of an agent's worktree (issue 14).

Compose names a project after its directory unless COMPOSE_PROJECT_NAME says otherwise, and every
worktree's directory is named after its adw_id inside trees/, so two repos' agents "a1" (or any two
checkouts of one repo) would share containers, networks and volumes. Grove writes
``COMPOSE_PROJECT_NAME=<repo name>-<adw_id>`` into .ports.env and the merged env files (Compose
reads ``.env`` in the project directory by itself).
"""

from __future__ import annotations

import re

# Compose's own rule (compose-go NormalizeProjectName): lower-case letters, digits, '-' and '_',
# starting with a letter or a digit; it lower-cases the name and drops every other character.
_DROP = re.compile(r"[^a-z0-9_-]")


def normalize(text: str) -> str:
    return _DROP.sub("", text.lower()).lstrip("-_")


def project_name(repo_name: str, adw_id: str) -> str:
    """``<repo>-<adw_id>`` as Compose will accept it.

    Distinct agents of one repo keep distinct names: an adw_id is ASCII letters, digits, '-' and
    '_' (lib/grove/core/ids.py), and ids differing only by case are refused, so lower-casing cannot merge
    two of them. A repo name with nothing usable left is dropped rather than invented.
    """
    repo = normalize(repo_name)
    agent = adw_id.lower()
    return normalize(f"{repo}-{agent}" if repo else agent)
