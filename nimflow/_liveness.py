"""What keeps a run's row truthful while it runs: a heartbeat every few seconds (so a reader can
tell a run whose process died, see nimflow._history), and the watch on Ctrl-C and SIGTERM
(`nimflow kill`) that cancels the run and says which of the two it was. And what keeps the
process lean during it: the garbage collector and malloc's arenas.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import gc
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import anyio.abc

from nimflow._store import Run, Store

__all__ = [
    "CTRL_C",
    "HEARTBEAT_SECONDS",
    "KILLED",
    "Stop",
    "few_malloc_arenas",
    "heartbeat",
    "quiet_gc",
    "watch_signals",
]

HEARTBEAT_SECONDS = 2.0
CTRL_C = "cancelled (Ctrl-C)"
KILLED = "cancelled by nimflow kill"


@dataclass
class Stop:
    """Why the run was stopped from outside, once it was."""

    reason: str | None = None
    signum: int | None = None


async def heartbeat(store: Store, row: Run) -> None:
    """Every few seconds the run row says the run is alive (through the writer thread)."""
    while True:
        await anyio.sleep(HEARTBEAT_SECONDS)
        row.heartbeat_at = time.time()
        store.writer.update(Run, row.id, {"heartbeat_at": row.heartbeat_at})


async def watch_signals(
    scope: anyio.CancelScope, stop: Stop, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Ctrl-C and SIGTERM (what `nimflow kill` sends) cancel the run, and say which it was."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            stop.signum = signum
            stop.reason = CTRL_C if signum == signal.SIGINT else KILLED
            scope.cancel()
            return


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep the collector off the objects that exist before the run (the imported SDKs and
    their type adapters: some 200,000), and let it run less often during it. Full collections
    walking those objects were a third of the CPU a model call costs the engine."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


_M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.cache
def few_malloc_arenas() -> None:
    """Cap glibc's malloc at 2 arenas in this process (once). A run's threads (sync tasks, claims,
    the writer) each get an arena of their own, and SQLite's and the claims' large buffers then
    fragment them: a 100,000-item cached map grew the process ~0.8 KB per item without the cap,
    and a batch file ~1 KB per line. A no-op off glibc."""
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).mallopt(_M_ARENA_MAX, 2)
