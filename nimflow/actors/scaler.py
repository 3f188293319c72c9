"""The autoscaler of one actor: a task of the ActorSession's task group.

Every TICK it looks at the backlog, the requests waiting for a replica: the router's queue behind
the per-replica in-flight cap, plus what the servers report waiting in their own queues
(`vllm:num_requests_waiting` on `/metrics`, as vLLM, NIM and the fake server report it). While
there is one, it starts as many replicas as the backlog justifies, up to the actor's max and the
free GPUs; each joins the routing as soon as it is ready. A replica idle (nothing in flight) for
scaledown_seconds is taken out of routing, then stopped, never below min. Starting happens under
the cross-process start lock, counting the actor's recorded and running replicas, so two runs
that share an actor never run more than max between them.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from nimflow._exceptions import ActorError, GPUUnavailableError
from nimflow.actors import records
from nimflow.actors.display import ProgressDisplay
from nimflow.actors.environment import DEFAULT_MAX_IN_FLIGHT
from nimflow.actors.locks import start_lock
from nimflow.actors.ready import check_models, wait_ready

if TYPE_CHECKING:
    from nimflow.actors.actor import ActorState
    from nimflow.actors.pool import ActorSession
    from nimflow.llm.router import Replica, Router

__all__ = ["Scaler", "server_waiting"]

log = logging.getLogger("nimflow.actors")

TICK = 0.25  # seconds between looks at the backlog: cheap (no I/O but the metrics below)
METRICS_EVERY = 1.0  # seconds between polls of the servers' own queues
METRICS_TIMEOUT = 2.0


def server_waiting(text: str) -> int:
    """The requests a server reports waiting in its own queue, from its Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_waiting"):
            try:
                total += float(line.rsplit(None, 1)[-1])
            except ValueError:
                continue
    return int(total)


class Scaler:
    def __init__(self, session: ActorSession, actor: ActorState, run_id: str | None) -> None:
        self.session = session
        self.actor = actor
        self._router: Router | None = None
        self._attached = anyio.Event()
        self._prestarted = False
        self.run_id = run_id
        self.starting = 0
        self._server_waiting = 0
        self._next_metrics = 0.0
        self._scope = anyio.CancelScope()
        self._finished = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None

    @property
    def router(self) -> Router:
        assert self._router is not None
        return self._router

    def attach(self, router: Router) -> None:
        """The actor's routing, once its first replicas are ready: scale-ups join it from now on."""
        self._router = router
        self._attached.set()

    @property
    def count(self) -> int:
        """Replicas in the routing (ready)."""
        return len(self._router.replicas) if self._router is not None else 0

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as group:  # the scale-ups under way
                    self._group = group
                    while True:
                        await anyio.sleep(TICK)
                        await self.step()
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """End the loop and any scale-up under way (a replica already started stays recorded)."""
        self._scope.cancel()
        await self._finished.wait()

    async def step(self) -> None:
        low, high = self.actor.bounds
        if self._router is None:
            await self._prestart(high)
            return
        self._drop_gone()
        backlog = self.router.backlog + await self._polled_waiting()
        if backlog and self.count + self.starting < high and self._group is not None:
            wanted = math.ceil(backlog / self.router.max_in_flight) - self.starting
            number = min(wanted, high - self.count - self.starting)
            if number > 0:
                self.starting += number
                self._group.start_soon(self._scale_up, number, backlog)
        elif not backlog and not self.starting:
            await self._scale_down_idle(low)

    async def _prestart(self, high: int) -> None:
        """While the first replicas load: start those that the tasks waiting for the actor justify
        (each sends at least one request), once."""
        if self._prestarted or self._group is None:
            return
        self._prestarted = True
        launched = len(self.actor.replicas)
        cap = self.actor.env.max_concurrency or DEFAULT_MAX_IN_FLIGHT
        number = min(high, math.ceil(self.actor.demand / cap)) - launched
        if number > 0:
            self.starting += number
            self._group.start_soon(self._scale_up, number, self.actor.demand)

    async def _polled_waiting(self) -> int:
        now = time.monotonic()
        if now < self._next_metrics:
            return self._server_waiting
        self._next_metrics = now + METRICS_EVERY
        total = 0
        client = self.session.client()
        for replica in self.router.replicas:
            try:
                response = await client.get(
                    replica.url.removesuffix("/v1") + "/metrics", timeout=METRICS_TIMEOUT
                )
                if response.status_code == 200:
                    total += server_waiting(response.text)
            except httpx.HTTPError:
                continue  # a server without metrics: the router's queue alone tells
        self._server_waiting = total
        return total

    # -- up --------------------------------------------------------------------------------------

    async def _scale_up(self, number: int, backlog: int) -> None:
        actor = self.actor
        try:
            indexes, gpus = await self._claim(number)
        except Exception as exc:
            self.starting -= number
            log.warning("actor %s: no replica could be started: %s", actor.env.name, exc)
            self._no_replica(exc)
            return
        self.starting -= number - len(indexes)
        if not indexes:
            return
        before = self.count if self._router is not None else len(actor.replicas) - len(indexes)
        reason = f"backlog of {backlog} request(s)"
        self._announce(f"{before} -> {before + len(indexes)} replicas ({reason})")
        await self._event(before, before + len(indexes), reason)
        async with anyio.create_task_group() as group:
            for index in indexes:
                group.start_soon(self._bring_up, index, gpus.get(index, ()))

    async def _claim(self, number: int) -> tuple[list[int], dict[int, tuple[str, ...]]]:
        """Under the start lock: the replica numbers free across processes (at most max in all),
        as many as the free GPUs allow, each started (not yet ready) and recorded."""
        actor, session = self.actor, self.session
        env, spec = actor.env, actor.spec
        high = actor.bounds[1]
        async with start_lock(env.name, wait=spec.startup_timeout + 600):
            if session.closing:
                return [], {}
            rows = await anyio.to_thread.run_sync(lambda: records.list_replicas(session.store, env.name))
            found = await anyio.to_thread.run_sync(actor.launcher.find, env.name)
            taken = {r.replica for r in rows} | {i.replica for i in found if i.running} | set(actor.replicas)
            free = [i for i in range(high) if i not in taken][: max(0, min(number, high - len(taken)))]
            gpus: dict[int, tuple[str, ...]] = {}
            while free:
                try:
                    gpus = await anyio.to_thread.run_sync(actor.gpus_for, session.store, free)
                    break
                except GPUUnavailableError:
                    free = free[:-1]  # as many as the free GPUs allow
            started: list[int] = []
            for index in free:
                try:
                    await session.start_one(
                        actor, index, ProgressDisplay(None, env.name), gpus=gpus.get(index, ())
                    )
                    started.append(index)
                except Exception as exc:
                    log.warning("actor %s: replica %s did not start: %s", env.name, index, exc)
                    await self._discard(index)
                    await self._event(self.count, self.count, f"replica {index} did not start: {exc}")
            return started, gpus

    async def _bring_up(self, index: int, gpus: tuple[str, ...]) -> None:
        actor, session = self.actor, self.session
        try:
            info = actor.replicas[index]
            await wait_ready(actor.launcher, info, actor.spec, session.client())
            info.model = await check_models(
                info, actor.spec, session.client(), api_key=session.api_key(actor)
            )
        except Exception as exc:
            # The run goes on with the replicas it has: this one is stopped and forgotten.
            self.starting -= 1
            log.warning("actor %s: replica %s did not become ready: %s", actor.env.name, index, exc)
            await self._discard(index)
            await self._event(self.count, self.count, f"replica {index} did not become ready: {exc}")
            self._no_replica(exc)
            return
        await self._attached.wait()  # a replica started alongside the first joins with them
        self.starting -= 1
        self.router.add(index, info.base_url)
        self._announce(f"replica {index} ready")

    def _no_replica(self, exc: Exception) -> None:
        if self._router is not None and not self.count and not self.starting:
            self.router.fail_waiting(
                ActorError(f"actor {self.actor.env.name!r} has no replica and none could be started: {exc}")
            )

    # -- down ------------------------------------------------------------------------------------

    async def _scale_down_idle(self, low: int) -> None:
        now = time.monotonic()
        idle = sorted(
            (
                r
                for r in self.router.replicas
                if not r.in_flight and now - r.idle_since >= self.actor.scaledown
            ),
            key=lambda r: -r.index,  # the highest numbers go first: the low ones stay warm
        )
        for replica in idle:
            if self.count <= low:
                return
            await self._scale_down(replica)

    async def _scale_down(self, replica: Replica) -> None:
        if not self.router.retire(replica):  # out of routing first; never with requests in flight
            return
        actor = self.actor
        info = actor.replicas.get(replica.index)
        if info is not None and await self._busy_elsewhere(info.base_url):
            self.router.add(replica.index, info.base_url)  # another process still sends to it
            return
        before = self.count + 1
        reason = f"idle for {actor.scaledown:g}s"
        self._announce(f"{before} -> {before - 1} replicas ({reason})")
        await self._discard(replica.index)
        await self._event(before, before - 1, reason)

    async def _busy_elsewhere(self, base_url: str) -> bool:
        """Whether the server reports requests running or waiting (sent by another process)."""
        try:
            response = await self.session.client().get(
                base_url.removesuffix("/v1") + "/metrics", timeout=METRICS_TIMEOUT
            )
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        for line in response.text.splitlines():
            if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
                try:
                    if float(line.rsplit(None, 1)[-1]) > 0:
                        return True
                except ValueError:
                    continue
        return False

    def _drop_gone(self) -> None:
        """Replicas another process scaled down (out of rotation, not restarting, no row) leave."""
        for replica in list(self.router.replicas):
            if not replica.up and not replica.restarting and replica.index not in self.actor.replicas:
                self.router.retire(replica)

    # -- bookkeeping -----------------------------------------------------------------------------

    async def _discard(self, index: int) -> None:
        actor = self.actor
        info = actor.replicas.pop(index, None)
        if info is None:
            return
        try:
            await anyio.to_thread.run_sync(actor.launcher.stop, info)
        except Exception as exc:  # the janitor retries from the row
            log.warning("actor %s: could not stop replica %s: %s", actor.env.name, index, exc)
            return
        await anyio.to_thread.run_sync(records.forget, self.session.store, actor.env.name, index)

    async def _event(self, before: int, after: int, reason: str) -> None:
        actor = self.actor.env.name
        try:
            await anyio.to_thread.run_sync(
                lambda: records.record_scale(
                    self.session.store, actor, before, after, reason, run_id=self.run_id
                )
            )
        except Exception as exc:  # a busy database must not stop the scaling
            log.warning("actor %s: scale event not recorded: %s", actor, exc)

    def _announce(self, change: str) -> None:
        console = self.session.console
        ready = self.count
        if console is not None:
            console.print(
                f"[bold]{self.actor.env.name}[/]: {change}; {ready} ready, {self.starting} starting",
                highlight=False,
            )
        log.info("actor %s: %s; %s ready, %s starting", self.actor.env.name, change, ready, self.starting)
