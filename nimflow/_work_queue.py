"""The positions of a node's calls still to run, shared by the event loop and worker threads."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

import anyio

__all__ = ["WorkQueue"]

TAKEN_POLL_SECONDS = 0.02


class WorkQueue:
    """The positions still to run: taken by the event loop and by sync slices in worker threads,
    given all at once or put a chunk at a time (from the event loop) by the claims ahead."""

    def __init__(self, positions: Iterable[int] = (), *, low: int | None = None) -> None:
        self._ready = deque(positions)
        self._lock = threading.Lock()
        self._open = low is not None  # more positions may be put until close()
        self.low = low or 0  # running_low() returns once fewer positions are ready
        self._changed = anyio.Event()  # set (and replaced) when positions are put or the queue closes
        self._drained = anyio.Event()
        self._waiting = 0  # workers in more()
        self.finished = 0  # calls finished so far

    def take(self) -> int | None:
        """The next position, or None when none is ready now (see more())."""
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def put(self, positions: list[int]) -> None:
        with self._lock:
            self._ready.extend(positions)
        self._wake()

    def close(self) -> None:
        self._open = False
        self._wake()

    def stop(self) -> None:
        with self._lock:
            self._ready.clear()
            self._open = False

    async def more(self) -> bool:
        """Wait until a position is ready (True) or none will ever be (False)."""
        self._waiting += 1
        try:
            while not self._ready and self._open:
                await self._changed.wait()
        finally:
            self._waiting -= 1
        return bool(self._ready)

    async def running_low(self) -> None:
        """Wait until fewer than `low` positions are ready."""
        while len(self._ready) >= self.low and self._open:
            self._drained = anyio.Event()
            # A finished call sets the event; a taken one cannot (takers may be threads), so look
            # again every TAKEN_POLL_SECONDS: waiting for the first call of a slow chunk to finish
            # left the next claim 1.5 s late, while a cooperating process claimed the rest.
            with anyio.move_on_after(TAKEN_POLL_SECONDS):
                await self._drained.wait()

    @property
    def idle_workers(self) -> int:
        """How many workers are waiting for positions."""
        return self._waiting

    def finished_one(self) -> None:
        """Called on the event loop as each call finishes (takers may be threads, which cannot
        set an event): wakes running_low() once the ready positions run low."""
        self.finished += 1
        if len(self._ready) < self.low:
            self._drained.set()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
