"""Running `python -m nimflow` as a user does, in a subprocess with its own home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def nimflow(
    *args: str,
    cwd: Path,
    terminal_columns: int | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Piped by default (no COLUMNS); `terminal_columns` makes rich treat it as a terminal that wide."""
    full = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TTY_COMPATIBLE")}
    full.update(env or {})
    if terminal_columns is not None:
        full.update(TTY_COMPATIBLE="1", COLUMNS=str(terminal_columns), NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [sys.executable, "-m", "nimflow", *args],
        cwd=cwd,
        env=full,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
    )
