"""The ground every other layer stands on: errors, settings, the doors to outside tools (proc, git,
pgdb, portable), locks and atomic writes, ids, progress reports, the seed's models and agent state.

Imports nothing from the rest of Grove: core modules import only each other (and never in a cycle).
"""
