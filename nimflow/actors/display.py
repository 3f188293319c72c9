"""Live progress of a server start: one line per replica, with the last log line."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Thread-safe (launchers report from worker threads); a no-op without a console."""

    def __init__(self, console: Console | None, actor: str) -> None:
        self._console = console
        self._actor = actor
        self._lines: dict[int, str] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._started = time.monotonic()

    def __enter__(self) -> ProgressDisplay:
        if self._console is not None and self._console.is_terminal:
            from rich.live import Live

            self._live = Live(console=self._console, transient=True, refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, replica: int, text: str) -> None:
        with self._lock:
            if self._lines.get(replica) == text:
                return
            self._lines[replica] = text
            if self._live is not None:
                from rich.text import Text

                body = "\n".join(f"{self._actor}/{i}: {line}" for i, line in sorted(self._lines.items()))
                self._live.update(Text(body))

    def done(self, description: str) -> None:
        if self._console is not None:
            elapsed = time.monotonic() - self._started
            self._console.print(
                f"[bold]{self._actor}[/]: {description} — ready in {elapsed:.1f}s", highlight=False
            )
