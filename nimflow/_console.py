"""The CLI's consoles: rich on a terminal; unwrapped plain lines when piped."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

__all__ = ["console", "err_console", "make_console", "print_table"]

_PIPED_WIDTH = 100_000  # piped output is read by programs and pagers: never wrap it


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = _PIPED_WIDTH
    return console


def print_table(console: Console, table: Table) -> None:
    """Print a table without cutting a cell short: names and URLs must paste back whole.

    Rich squeezes a table into the terminal with ellipses; here a table wider than the terminal
    keeps its natural width (the terminal then wraps its long lines instead).
    """
    natural = Measurement.get(console, console.options.update(width=_PIPED_WIDTH), table).maximum
    if natural > console.width:
        table.width = natural
    console.print(table, soft_wrap=False, crop=False)


# The CLI's two consoles (rich looks up sys.stdout when it prints, so test runners capture them).
console = make_console()
err_console = make_console(stderr=True)
