"""Replica selection shared by the async and sync transports.

Each request goes to the in-rotation replica with the fewest requests in flight, never above the
per-replica cap. Requests that find every replica at its cap wait in one FIFO queue and are handed a
slot as soon as one frees up (fair: first come, first served). The replica set changes live: an
autoscaler adds a replica as soon as it is ready (queued requests go to it at once) and retires an
idle one; the queue's length is the backlog it scales on. State is guarded by a thread lock
because the sync client is used from worker threads while the async client runs on the event loop;
the lock is uncontended on the hot path and held for a few attribute updates only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from nimflow._exceptions import ActorConfigError, EndpointUnreachableError
from nimflow._redact import redact

__all__ = ["Replica", "RequestRestart", "Router", "restarts_in"]

log = logging.getLogger("nimflow.llm")

# Asks for the restart of the replica that refused connections at a URL, from any thread, without
# waiting for it: the outcome is handed to the callback (its new base URL, or None to leave it out
# of rotation). False when no restart can be had.
RequestRestart = Callable[[str, Callable[[str | None], None]], bool]


class Replica:
    __slots__ = ("idle_since", "in_flight", "index", "restarting", "up", "url")

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url.rstrip("/")
        self.in_flight = 0
        self.up = True
        self.restarting = False
        self.idle_since = time.monotonic()  # when in_flight last fell to 0

    def __repr__(self) -> str:
        state = "up" if self.up else ("restarting" if self.restarting else "down")
        return f"Replica({self.url}, in_flight={self.in_flight}, {state})"


class _Waiter(Protocol):
    def give(self, replica: Replica, router: Router) -> bool: ...
    def fail(self, exc: Exception) -> None: ...


class _AsyncWaiter:
    __slots__ = ("fut", "loop", "thread")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fut: asyncio.Future[Replica] = self.loop.create_future()
        self.thread = threading.get_ident()

    def give(self, replica: Replica, router: Router) -> bool:
        if self.fut.done():
            return False  # cancelled while queued
        if threading.get_ident() == self.thread:
            self.fut.set_result(replica)
        else:
            self.loop.call_soon_threadsafe(self._deliver, replica, router)
        return True

    def _deliver(self, replica: Replica, router: Router) -> None:
        if self.fut.done():
            router.release(replica)  # cancelled in the meantime: pass the slot on
        else:
            self.fut.set_result(replica)

    def fail(self, exc: Exception) -> None:
        if threading.get_ident() == self.thread:
            self._fail(exc)
        else:
            self.loop.call_soon_threadsafe(self._fail, exc)

    def _fail(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


class _ThreadWaiter:
    __slots__ = ("error", "event", "replica")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.replica: Replica | None = None
        self.error: Exception | None = None

    def give(self, replica: Replica, router: Router) -> bool:
        self.replica = replica
        self.event.set()
        return True

    def fail(self, exc: Exception) -> None:
        self.error = exc
        self.event.set()


_W = TypeVar("_W", _AsyncWaiter, _ThreadWaiter)


class Router:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_in_flight: int,
        on_replica_down: RequestRestart | None = None,
        breaker_seconds: float = 3.0,
        max_replicas: int | None = None,
        indexes: Sequence[int] | None = None,
    ) -> None:
        # An autoscaled router (max_replicas given) may start empty: its requests wait for a replica.
        if not urls and max_replicas is None:
            raise ActorConfigError("an actor needs at least one replica URL; pass its server's base URL.")
        if max_in_flight < 1:
            raise ActorConfigError(
                f"max_in_flight_per_replica is {max_in_flight}; it must be at least 1 "
                "(set the actor's max_concurrency to 1 or more, or leave it unset)."
            )
        numbers = list(indexes) if indexes is not None else list(range(len(urls)))
        # Replaced, never mutated in place: other threads iterate it without the lock.
        self.replicas = [Replica(i, u) for i, u in zip(numbers, urls, strict=True)]
        self.max_replicas = max(max_replicas or 0, len(self.replicas))
        self.packs = max_replicas is not None
        self.max_in_flight = max_in_flight
        self._on_down = on_replica_down
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._rr = 0  # rotates ties so light load spreads over replicas
        # The circuit breaker: once every replica has been out of reach for breaker_seconds with no
        # restart under way, requests fail at once (EndpointUnreachableError) instead of each one
        # retrying for a minute; one probe per breaker_seconds still goes out, to notice a return.
        self.breaker_seconds = breaker_seconds
        self._down_since: float | None = None
        self._next_probe = 0.0

    # -- selection (call with the lock held) -------------------------------------------------------
    def _pick(self) -> Replica | None:
        replicas = self.replicas
        n = len(replicas)
        if n == 0:
            return None  # scaled to zero: wait in the queue for the scaler's replica
        best: Replica | None = None
        best_at = 0
        # An autoscaled set packs light load on its first replicas, so that the others go idle
        # and can be stopped; a fixed set rotates ties, to spread light load.
        start = 0 if self.packs else self._rr
        any_up = False
        for k in range(n):
            r = replicas[(start + k) % n]
            if not r.up:
                continue
            any_up = True
            if r.in_flight < self.max_in_flight and (best is None or r.in_flight < best.in_flight):
                best, best_at = r, (start + k) % n
        if any_up:
            self._down_since = None
        elif any(r.restarting for r in replicas):
            self._down_since = None  # wait for the restart
        else:
            if self._circuit_open():
                raise EndpointUnreachableError("every replica is out of reach and none is being restarted")
            # Nothing in rotation and nothing coming back: probe the down replicas rather than
            # fail for good, so a server that was only briefly away is picked up again.
            for at, r in enumerate(replicas):
                if r.in_flight < self.max_in_flight and (best is None or r.in_flight < best.in_flight):
                    best, best_at = r, at
        if best is not None:
            best.in_flight += 1
            self._rr = (best_at + 1) % n
        return best

    def _circuit_open(self) -> bool:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            return False
        if now - self._down_since < self.breaker_seconds:
            return False
        if now >= self._next_probe:  # half open: this request probes
            self._next_probe = now + self.breaker_seconds
            return False
        return True

    def _wake(self) -> None:
        while self._waiters:
            try:
                r = self._pick()
            except EndpointUnreachableError as exc:
                while self._waiters:
                    self._waiters.popleft().fail(exc)
                return
            if r is None:
                return
            w = self._waiters.popleft()
            if not w.give(r, self):
                r.in_flight -= 1

    # -- acquire / release -------------------------------------------------------------------------
    # Both sides share the decision (a replica now, or a place in the queue); they differ only in
    # how they wait: on a future of the event loop, or on a thread event.
    def _now_or_queue(self, waiter: Callable[[], _W]) -> Replica | _W:
        with self._lock:
            if not self._waiters:
                r = self._pick()
                if r is not None:
                    return r
            queued = waiter()
            self._waiters.append(queued)
            return queued

    async def acquire(self, wait_limit: float | None = None) -> Replica:
        waiter = self._now_or_queue(_AsyncWaiter)
        if isinstance(waiter, Replica):
            return waiter
        try:
            return await asyncio.wait_for(waiter.fut, wait_limit)
        except BaseException:
            fut = waiter.fut
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise

    def acquire_sync(self, wait_limit: float | None = None) -> Replica:
        waiter = self._now_or_queue(_ThreadWaiter)
        if isinstance(waiter, Replica):
            return waiter
        if not waiter.event.wait(wait_limit):
            with self._lock:
                if waiter.replica is None and waiter.error is None:
                    self._waiters.remove(waiter)
                    raise TimeoutError("timed out waiting for a free replica slot")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.replica is not None
        return waiter.replica

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.in_flight -= 1
            if replica.in_flight == 0:
                replica.idle_since = time.monotonic()
            if self._waiters:
                self._wake()

    # -- a live replica set (the autoscaler) ---------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Requests waiting for a replica slot (every replica is at its cap, or there is none)."""
        return len(self._waiters)

    def add(self, index: int, url: str) -> Replica:
        """A ready replica joins the rotation; queued requests go to it at once."""
        replica = Replica(index, url)
        with self._lock:
            self.replicas = [*self.replicas, replica]
            self.max_replicas = max(self.max_replicas, len(self.replicas))
            self._wake()
        return replica

    def retire(self, replica: Replica) -> bool:
        """Take an idle replica out of the rotation; False (and it stays) if it has requests in flight."""
        with self._lock:
            if replica.in_flight or replica not in self.replicas:
                return False
            self.replicas = [r for r in self.replicas if r is not replica]
            return True

    def fail_waiting(self, exc: Exception) -> None:
        """Fail the queued requests (no replica could be started for them)."""
        with self._lock:
            if self.replicas:
                return
            while self._waiters:
                self._waiters.popleft().fail(exc)

    # -- health --------------------------------------------------------------------------------------
    def mark_up(self, replica: Replica) -> None:
        """A request succeeded on a replica that was out of rotation (a probe): put it back."""
        if replica.up:
            return
        with self._lock:
            if not replica.up and not replica.restarting:
                replica.up = True
                log.info("replica %s answers again; back in rotation", redact(replica.url))
                self._wake()

    def mark_down(self, replica: Replica, url: str) -> None:
        """`replica` refused a connection at `url`: take it out and start one restart episode."""
        with self._lock:
            if replica.url != url or not replica.up:
                return  # already handled (or it was restarted at a new URL meanwhile)
            replica.up = False
            start_restart = self._on_down is not None
            replica.restarting = start_restart
            self._wake()  # queued requests may now need to probe or fail
        log.warning("replica %s refused the connection; taken out of rotation", redact(url))
        if start_restart:
            assert self._on_down is not None
            if not self._on_down(url, lambda new_url: self._restarted(replica, url, new_url)):
                self._restarted(replica, url, None)

    def _restarted(self, replica: Replica, url: str, new_url: str | None) -> None:
        """The outcome of a restart episode: back in rotation at `new_url`, or left out (None)."""
        with self._lock:
            replica.restarting = False
            if new_url:
                replica.url = new_url.rstrip("/")
                replica.up = True
            self._wake()
        if new_url:
            log.info("replica %s is back at %s", redact(url), redact(replica.url))


def restarts_in(
    group: anyio.abc.TaskGroup, restart: Callable[[str], Awaitable[str | None]]
) -> RequestRestart:
    """Restarts as tasks of `group` (structured: they end with it), asked for from any thread.

    Call it in the group's event loop. Each request runs `restart(url)` as one task of the group and
    reports its outcome: the replica's new base URL, or None (also when it raised) to leave it out."""
    token = anyio.lowlevel.current_token()
    home = threading.get_ident()

    def request(url: str, done: Callable[[str | None], None]) -> bool:
        async def job() -> None:
            new_url: str | None = None
            try:
                new_url = await restart(url)
            except Exception:
                log.warning(
                    "restarting replica %s failed; it stays out of rotation", redact(url), exc_info=True
                )
            finally:
                done(new_url)

        try:
            if threading.get_ident() == home:
                group.start_soon(job)
            else:  # a worker thread (the sync client): hand the task to the group's loop
                anyio.from_thread.run_sync(group.start_soon, job, token=token)
        except RuntimeError:  # the group has ended, or its event loop is gone: no restart
            return False
        return True

    return request
