"""The operations, one module each: setup (chain, steps, worktree), teardown and gc (cleanup),
doctor, the warm pool, the merge queue (merge, integration), sync, conflicts, exec and run, and the
read-only views (queries, watch).

May import ``grove.core``, ``grove.safety``, ``grove.resources`` and each other, never the CLI.
"""
