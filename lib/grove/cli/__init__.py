"""The `grove` command: Invoke's own Program over Grove's namespace.

So `grove setup --adw-id X`, `grove --list`, `grove --help setup`, `--print-completion-script`,
Invoke's config files (~/.invoke.yaml, /etc/invoke.yaml, `-f FILE`, INVOKE_GROVE_*) and `--json`
behave exactly as with `inv -r path/to/grove`.

The front door: the tasks, split by area (agents, merging, maintenance, steps), assembled in
``tasks.py``. May import every layer below; nothing below imports it.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

# Start-up allocates some 200,000 objects that live until exit (Invoke's modules, then Grove's), and
# at the default threshold (700) the cyclic collector walks them again and again while they are
# made: ~10 ms of every `grove` command (issue 24). Collections stay, 70 times less often; the
# imports' objects are frozen once made (tasks.py), so a long task (mcp, watch, pool --follow)
# still collects its own garbage.
gc.set_threshold(50_000, 20, 20)

from invoke import Program  # noqa: E402  (after the threshold: Invoke's import is most of it)
from invoke.parser import Parser, ParserContext  # noqa: E402

from .. import __version__
from ..core.hints import set_program
from .tasks import ns

# Invoke's flags for its own shell runner: Grove runs no shell command through Invoke, so they
# would mean nothing, and `grove --dry setup` creating a worktree was a flag that lied (issue 21).
# Grove's own `--dry-run` is a task flag that really changes nothing.
RUNNER_FLAGS = {"command-timeout", "dry", "echo", "hide", "pty", "warn-only", "prompt-for-sudo-password"}
RUNNER_SHORT = {"T", "R", "e", "p", "w"}


class GroveProgram(Program):
    """Invoke's Program without its shell-runner flags, with `grove help [TASK]`."""

    _words: set[str] | None = None  # the words of the line, while its tasks are parsed

    def core_args(self) -> list[Any]:
        return [arg for arg in super().core_args() if not set(arg.names) & RUNNER_FLAGS]

    def update_config(self, merge: bool = True) -> None:
        # Invoke's own reads the runner flags dropped above; what is left is its runtime config file.
        runtime_path: Any = self.args.config.value or os.environ.get("INVOKE_RUNTIME_CONFIG")
        self.config.set_runtime_path(runtime_path)
        self.config.load_runtime(merge=False)
        if merge:
            self.config.merge()

    def _make_parser(self) -> Any:
        # Invoke builds a parser context for every task, then deep-copies them all, to parse a line
        # that names one or two: ~6 ms of every `grove` command over Grove's 40 tasks (issue 24).
        # Only a word of the line can be a task name, so the tasks it names are all the parser needs;
        # a line naming none (a typo, `grove` alone) gets every task, for Invoke's own messages.
        # `--complete` builds its parser later, from every task (self._words is None again then).
        words, names = self._words, self.collection.task_names
        wanted = {name: aliases for name, aliases in names.items() if words and ({name, *aliases} & words)}
        if not wanted:
            return super()._make_parser()
        ignore = self.config.tasks.ignore_unknown_help
        return Parser(initial=self.initial_context,
                      contexts=[ParserContext(name=name, aliases=aliases,
                                              args=self.collection[name].get_arguments(ignore_unknown_help=ignore))
                                for name, aliases in wanted.items()])

    def parse_tasks(self) -> None:
        self._words = set(self.core.unparsed)
        try:
            super().parse_tasks()
        finally:
            self._words = None

    def normalize_argv(self, argv: Any) -> None:
        super().normalize_argv(argv)
        # `grove help` and `grove help setup` (issue 21: "No idea what 'help' is!").
        if len(self.argv) > 1 and self.argv[1] == "help":
            self.argv = [self.argv[0], "--help", *self.argv[2:]]
        for word in self.argv[1:]:
            if not word.startswith("-"):
                break
            if word.lstrip("-").partition("=")[0] in RUNNER_FLAGS | RUNNER_SHORT:
                # Exit 2, nothing changed: not "No idea what '--dry' is!" and exit 1.
                sys.stderr.write(f"grove: {word} is one of Invoke's shell-runner flags, which Grove does not use\n"
                                 "  hint: Grove's own `--dry-run` (setup, teardown, merge, gc, pool, doctor --fix) shows what a task would do; "
                                 "`grove --help` lists Grove's flags\n")
                sys.exit(2)


program = GroveProgram(namespace=ns, version=__version__, name="Grove", binary="grove", binary_names=["grove"])


def main() -> None:
    set_program("grove")
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:
        # `grove --help | head -3`: the reader left. Python's recipe: point stdout at devnull so the
        # flush at exit does not raise again, and exit quietly (issue 21).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
