"""`python -m grove ...` is the `grove` command."""

from .cli import main

main()
