"""The start lock: starting replicas is one critical section per NIMFLOW_HOME, across processes.

Two runs that start together on a cold pool would otherwise both create `nimflow-X-0`; with the
lock the second waits, then finds and adopts what the first started. One lock for the whole home,
not one per actor, because GPU placement looks at every actor's replicas.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import AsyncIterator

import anyio

from nimflow import _config
from nimflow._exceptions import ActorError

__all__ = ["start_lock"]

_POLL = 0.05


@contextlib.asynccontextmanager
async def start_lock(actor: str, *, wait: float) -> AsyncIterator[None]:
    """Held while an actor's replicas are found, replaced and started (not while they load)."""
    path = _config.home() / "actors-start.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # a local file: opening it does not wait on anything
        deadline = time.monotonic() + wait
        # Polled, not a blocking flock in a thread: the wait stays cancellable (Ctrl-C).
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ActorError(
                        f"actor {actor!r}: another nimflow process has been starting servers in this "
                        f"NIMFLOW_HOME for over {wait:g}s ({path} is locked). Wait for it, or stop it."
                    ) from None
                await anyio.sleep(_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
