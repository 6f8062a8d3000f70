"""The one exception type Grove raises; tasks turn it into an Invoke ``Exit``."""

# Exit codes from the public contract (DESIGN.md).
OK = 0
FAILED = 1  # the operation failed: git, install, conflict, no free slot
BAD_INPUT = 2  # bad input or configuration; nothing was changed
INTERRUPTED = 130  # Ctrl-C or SIGTERM (as a shell reports SIGINT), after Grove cleaned up


class GroveError(Exception):
    """A failure with an exit code and a one-line hint on what to do."""

    def __init__(self, message: str, code: int = FAILED, hint: str = ""):
        from .hints import speak  # issue 21: name the command the user actually runs (grove or inv)

        message, hint = speak(message), speak(hint)
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


def bad_input(message: str, hint: str = "") -> GroveError:
    return GroveError(message, BAD_INPUT, hint)
