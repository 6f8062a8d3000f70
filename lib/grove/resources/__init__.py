"""What each agent gets besides its worktree: ports, env files, repointed configs, included files,
submodules, installed dependencies, its database (the reset script, Postgres) and a Compose name.

May import ``grove.core`` and ``grove.safety``; never an operation or the CLI.
"""
