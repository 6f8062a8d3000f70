"""Grove: isolated, ready-to-run git worktrees for many coding agents at once."""
