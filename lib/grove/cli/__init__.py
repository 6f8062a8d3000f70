"""The `grove` command: Invoke's own Program over Grove's namespace.

So `grove setup --adw-id X`, `grove --list`, `grove --help setup`, `--print-completion-script`,
Invoke's config files (~/.invoke.yaml, /etc/invoke.yaml, `-f FILE`, INVOKE_GROVE_*) and `--json`
behave exactly as with `inv -r path/to/grove`.

The front door: the tasks, split by area (agents, merging, maintenance, steps), assembled in
``tasks.py``. May import every layer below; nothing below imports it.
"""

from __future__ import annotations

from invoke import Program

from .. import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="Grove", binary="grove", binary_names=["grove"])


def main() -> None:
    program.run()
