"""The one validator for every number Grove reads, from a flag or a config key (issue 20, item 11).

`gc --max-age-days -1` (or `nan`) once tore down an agent active seconds earlier, and
`setup --epic E --count -2` set one up: Python's float() takes "nan", "inf" and "1e309", int()
takes "-2", and a comparison with nan is always False, so a range check written as
``if value <= 0`` lets nan through. Here a number must be finite, an integer where one is meant, and
inside its range; anything else is bad input (exit 2) naming the flag or key and what it accepts,
raised before anything changes.
"""

from __future__ import annotations

import math

from .errors import bad_input


class Range:
    """What a setting accepts: ``low``..``high``, ``low`` itself excluded when ``above``.
    (A plain class: config imports this on every task, and a dataclass costs about a millisecond.)"""

    __slots__ = ("low", "high", "integer", "above", "unit")

    def __init__(self, low: float, high: float, integer: bool = False, above: bool = False, unit: str = ""):
        self.low, self.high, self.integer = low, high, integer
        self.above = above  # low is exclusive: "more than 0"
        self.unit = unit

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.above and self.low == 0:
            return f"it must be positive, at most {_show(self.high)}{unit}"
        kind = "whole numbers" if self.integer else "numbers"
        return f"accepted: {kind} {_show(self.low)}..{_show(self.high)}{unit}" + (
            f", {_show(self.low)} excluded" if self.above else "")

    def span(self) -> str:
        if self.above:
            return "the accepted range"
        return f"{_show(self.low)}..{_show(self.high)}{' ' + self.unit if self.unit else ''}"


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse(value: object, name: str, accepted: Range) -> int | float:
    """``value`` (a string from a flag or a key, or a number) as a checked int or float.

    ``name`` is what the user typed: ``--max-age-days`` or ``ADW_PORT_SLOTS``.
    """
    shown = str(value).strip()
    sep = "=" if name.startswith("ADW_") else " "
    try:
        number = math.nan if isinstance(value, bool) else float(shown)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or (accepted.integer and not number.is_integer()):
        kind = "a whole number" if accepted.integer else "a finite number"
        raise bad_input(f"{name}{sep}{shown!r} is not {kind} ({accepted.describe()})",
                        f"fix {name}; nothing was changed")
    if not ((number > accepted.low if accepted.above else number >= accepted.low) and number <= accepted.high):
        raise bad_input(f"{name}{sep}{shown} is outside {accepted.span()} ({accepted.describe()})",
                        f"fix {name}; nothing was changed")
    return int(number) if accepted.integer else number


# The ranges Grove uses, named once so flags and keys of one kind agree.
COUNT = Range(1, 1000, integer=True)
SECONDS = Range(0, 10_000_000, above=True, unit="seconds")
DAYS = Range(0, 36_500, unit="days")  # 0: every unfinished agent, however recent (make demo uses it)
