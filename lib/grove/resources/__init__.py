"""What each agent gets besides its worktree: ports, env files, repointed configs, included files,
submodules, installed dependencies, its database (Postgres, the reset script) and a Compose name.
Each is a plugin of one shape (shape.py) listed in table.py, which the operations loop over.

May import ``grove.core`` and ``grove.safety``; never an operation or the CLI.
"""
