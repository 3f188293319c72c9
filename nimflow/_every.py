"""`nimflow run --every SECONDS`: start a run at a fixed rate until Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Callable

from nimflow._exceptions import UserInputError

__all__ = ["CANCELLED", "run_every"]

CANCELLED = 130  # the exit code of a run stopped by Ctrl-C


def run_every(seconds: float, run_once: Callable[[], int], on_wait: Callable[[float], None]) -> int:
    """Call `run_once` (which returns an exit code) every `seconds` until Ctrl-C.

    A failed run is recorded and reported by `run_once`; the next one still starts. A run that
    overruns skips the starts it missed. Ctrl-C while waiting ends the loop with 0; a run
    stopped by Ctrl-C ends it with that run's code.
    """
    if seconds <= 0:
        raise UserInputError(f"--every {seconds:g}: give the seconds between run starts, more than 0.")
    next_start = time.monotonic()
    while True:
        code = run_once()
        if code == CANCELLED:
            return code
        next_start += seconds
        now = time.monotonic()
        if next_start < now:
            next_start = now + (seconds - (now - next_start) % seconds)
        on_wait(next_start - now)
        try:
            time.sleep(next_start - now)
        except KeyboardInterrupt:
            return 0
