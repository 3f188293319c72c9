"""Runs a Graph's nodes on an anyio task group: dependencies, map fan-out, concurrency, cancel.

Every node is a task in one task group; it waits for its upstream nodes and runs as soon as they
are done, so independent nodes run concurrently. A failed node does not cancel its siblings:
what they finish is cached and kept, and only the nodes downstream of the failure are skipped.
The scheduler only schedules: the cache component keys, looks up and stores results, the
recorder writes task-run rows, and `attempt()` makes the tries.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from nimflow._attempt import Call, Outcome, attempt, settled, try_sync
from nimflow._exceptions import UserInputError
from nimflow._graph import Graph, Node, Promise, map_items
from nimflow._recorder import ItemFailure, NodeState, Recorder
from nimflow._resources import ResourceSession, TaskResources
from nimflow._result_cache import ResultCache, encoder
from nimflow._status import Status
from nimflow._store import Cached, Store
from nimflow._task import TaskSpec
from nimflow._work_queue import WorkQueue

__all__ = ["Scheduler"]

DEFAULT_ASYNC_CONCURRENCY = 256
DEFAULT_THREADS = 16
# A worker thread runs the first tries of sync map items back to back for up to this long before
# handing back to the event loop: fast sync tasks then cost one thread hop per slice, not per item.
SYNC_SLICE_SECONDS = 0.02

# Keys claimed at a time: the first chunk fills the node's workers (at most CLAIM_CHUNK); the chunks
# after it follow how fast the workers finish, up to CLAIM_CHUNK_MAX (see _claimed).
CLAIM_CHUNK, CLAIM_CHUNK_MAX = 500, 4_000

# Waiting for items another run holds: poll the cache from the first to the second, doubling.
POLL_SECONDS = (0.05, 0.25)

log = logging.getLogger("nimflow")

TaskNode = Node[TaskSpec[..., Any]]
_FREED: dict[str, Any] = {}  # what a finished call's inputs are replaced with (never written to)


class Scheduler:
    def __init__(
        self,
        graph: Graph[TaskSpec[..., Any]],
        run_id: str,
        store: Store,
        inputs: dict[str, Any],
        read_cache: bool = True,
        resources: ResourceSession | None = None,
        owner: str | None = None,
    ) -> None:
        """`owner` is set in a worker process of the run (--workers): it holds its own claims and
        leaves the node rows to the run's process."""
        for node in graph:
            if node.task.actor is not None and resources is None:
                raise UserInputError(
                    f"task {node.task.name} needs actor {node.task.actor.name!r}, but nothing serves "
                    "actors here: run the workflow with nf.run, which acquires them."
                )
        self.graph = graph
        self.inputs = inputs
        self._resources = resources
        self.run_id = run_id
        self.recorder = Recorder(run_id, store, graph.nodes, worker=owner is not None)
        self.cache = ResultCache(store, run_id, read=read_cache, resources=resources, owner=owner)
        self._values: dict[str, Any] = {}
        self._events = {node.id: anyio.Event() for node in graph}
        self._threads = anyio.CapacityLimiter(DEFAULT_THREADS)
        # Set once the run's worker processes (--workers) can claim: a map claims its items only
        # then, or this process would have claimed them before the workers had started.
        self.peers_ready: anyio.Event | None = None

    @property
    def states(self) -> dict[str, NodeState]:
        return self.recorder.states

    @property
    def failures(self) -> list[ItemFailure]:
        return self.recorder.failures

    # -- the graph ----------------------------------------------------------------------------

    async def execute(self) -> Any:
        async with anyio.create_task_group() as tg:
            for node in self.graph:
                tg.start_soon(self._run_node, node)
        if any(state.status is not Status.SUCCEEDED for state in self.states.values()):
            return None
        return self._resolve(self.graph.output)

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Promise):
            if value.source.startswith("input:"):
                result = self.inputs[value.source[len("input:") :]]
            else:
                result = self._values[value.source]
            return result if value.index is None else result[value.index]
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    async def _run_node(self, node: TaskNode) -> None:
        recorder = self.recorder
        try:
            for upstream in node.upstream:
                await self._events[upstream].wait()
            blocked = [u for u in node.upstream if self.states[u].status is not Status.SUCCEEDED]
            if blocked:
                recorder.node_skipped(node, blocked)
                return
            recorder.node_started(node)
            try:
                if node.is_map:
                    await self._run_map(node)
                else:
                    await self._run_single(node)
            except Exception as exc:
                # A bad map input, an actor that cannot start: the node fails, its siblings go on.
                recorder.node_failed(node, exc)
        except anyio.get_cancelled_exc_class():
            recorder.node_cancelled(node)
            raise
        finally:
            self._events[node.id].set()

    async def _run_single(self, node: TaskNode) -> None:
        kwargs = self._resolve(node.inputs)
        [outcome], keys, hits = await self._run_calls(node, [kwargs])
        key = keys[0] if keys else None
        if outcome.ok:
            self._values[node.id] = outcome.value
        self.recorder.single_done(node, outcome, key, cache_hit=bool(hits))

    async def _run_map(self, node: TaskNode) -> None:
        calls = map_items(node.label, self._resolve(node.inputs), node.mapped)
        self.states[node.id].total = len(calls)
        outcomes, _, _ = await self._run_calls(node, calls)
        self._values[node.id] = [o.value if o.ok else None for o in outcomes]
        self.recorder.map_done(node, outcomes)

    # -- calls: cache lookup, then execution ---------------------------------------------------

    async def _run_calls(
        self, node: TaskNode, calls: list[dict[str, Any]]
    ) -> tuple[list[Outcome], list[str] | None, int]:
        """Runs the node's calls (one per map item), replaying cache hits; returns the outcomes in
        call order, the cache keys (None for an uncached task) and the number of hits."""
        spec, cache = node.task, self.cache
        outcomes: list[Outcome | None] = [None] * len(calls)
        keys = await cache.keys(node, calls)
        hits = await cache.lookup(keys) if keys else {}
        pending: list[int] = []
        for position in range(len(calls)):
            entry = hits.get(keys[position]) if keys else None
            if entry is None:
                pending.append(position)
            else:
                self._replay(node, calls, outcomes, keys, position, entry)
        hit_count = len(calls) - len(pending)
        if pending:
            # A server that cannot be had fails the node once, with its own clear message.
            resources = await self._acquire(spec)
            run = functools.partial(self._work, node, calls, outcomes, keys, resources)
            if keys is None or not cache.claims:
                await run(WorkQueue(pending), len(pending))
            else:
                try:
                    await self._claimed(node, calls, outcomes, keys, pending, run)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._release()
        return [o if o is not None else Outcome() for o in outcomes], keys, hit_count

    async def _claimed(
        self,
        node: TaskNode,
        calls: list[dict[str, Any]],
        outcomes: list[Outcome | None],
        keys: list[str],
        pending: list[int],
        run: Callable[[WorkQueue, int], Awaitable[None]],
    ) -> None:
        """The pending calls of a cached task, under claims: first those no other run holds (claimed
        chunk by chunk as the workers need them), then those others held: found in the cache once
        stored there, or taken over once their claimer let them go (it died, or failed them)."""
        state, cache = self.states[node.id], self.cache
        deferred: list[int] = []
        if node.is_map and self.peers_ready is not None:
            await self.peers_ready.wait()
        first = min(max(node.concurrency or DEFAULT_ASYNC_CONCURRENCY, 32), CLAIM_CHUNK)
        ahead = max(8, first // 4)
        queue = WorkQueue(low=ahead)

        async def claim_ahead() -> None:
            # Claims are database round trips: taken in a worker thread, ahead of the workers, so
            # no worker waits for the database between two items. The first chunk fills the
            # workers. Each later one is what they take now (the idle workers) and `ahead`, or
            # twice what finished during the last claim, whichever is more: fast tasks get
            # fewer, larger statements, and a process of slow tasks holds little more than it
            # runs, so cooperating processes (--workers) share a map's last items evenly (with a
            # whole chunk ahead, one of two processes held 272 of 400 slow items and the other
            # sat idle at the end).
            size, start = first, 0
            while start < len(pending):
                positions = pending[start : start + size]
                start += size
                finished_before = queue.finished
                taken, taken_over = await anyio.to_thread.run_sync(cache.take, [keys[p] for p in positions])
                state.taken_over += taken_over  # a dead claimer's leases, expired before we came to them
                queue.put([p for p in positions if keys[p] in taken])
                deferred.extend(p for p in positions if keys[p] not in taken)
                await queue.running_low()
                rate = 2 * (queue.finished - finished_before)
                size = min(max(rate, queue.idle_workers + ahead), CLAIM_CHUNK_MAX)
                queue.low = max(ahead, size // 4)
            queue.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim_ahead)
            await run(queue, len(pending))
        backoff = POLL_SECONDS[0]
        while deferred:
            waiting, deferred = deferred, []
            found = await cache.lookup([keys[p] for p in waiting])
            rest = [p for p in waiting if keys[p] not in found]
            for position in waiting:
                if keys[position] in found:
                    state.waited += found[keys[position]].run_id != self.run_id  # not our own workers'
                    self._replay(node, calls, outcomes, keys, position, found[keys[position]])
            if not rest:
                return
            taken, _ = await anyio.to_thread.run_sync(cache.take, [keys[p] for p in rest])
            mine = [p for p in rest if keys[p] in taken]
            deferred = [p for p in rest if keys[p] not in taken]
            if mine:
                state.taken_over += len(mine)
                await run(WorkQueue(mine), len(mine))
                backoff = POLL_SECONDS[0]
            elif deferred:
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, POLL_SECONDS[1])

    async def _release(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.cache.release)
        except Exception as exc:  # the leases expire on their own; the run's outcome stands
            log.warning("could not release claims (%s); they expire in %.0f s", exc, self.cache.lease)

    def _replay(
        self,
        node: TaskNode,
        calls: list[dict[str, Any]],
        outcomes: list[Outcome | None],
        keys: list[str] | None,
        position: int,
        entry: Cached,
    ) -> None:
        now = time.time()
        outcome = Outcome(ok=True, value=self.cache.replay(node.task, entry), started_at=now, ended_at=now)
        outcomes[position] = outcome
        item = position if node.is_map else None
        key = keys[position] if keys else None
        if entry.run_id == self.run_id:  # computed by a worker of this run, which wrote its row
            self.recorder.item_done(node, item, outcome, key, False, recorded=True)
        else:
            self.recorder.item_done(node, item, outcome, key, True)
        calls[position] = _FREED

    async def _work(
        self,
        node: TaskNode,
        calls: list[dict[str, Any]],
        outcomes: list[Outcome | None],
        keys: list[str] | None,
        resources: TaskResources | None,
        queue: WorkQueue,
        count: int,
    ) -> None:
        """Runs the calls of the positions in `queue` (at most `count`) on the node's workers, and
        records each as it finishes."""
        spec, recorder, cache = node.task, self.recorder, self.cache
        encode = encoder(spec)

        def next_call() -> tuple[int, Call] | None:
            position = queue.take()
            if position is None:
                return None
            return position, Call(spec, calls[position], resources, encode)

        def finished(position: int, outcome: Outcome) -> None:
            queue.finished_one()
            outcomes[position] = outcome
            key = keys[position] if keys else None
            if outcome.output_json is not None and key is not None:
                cache.save(spec, key, outcome.output_json)
            recorder.item_done(node, position if node.is_map else None, outcome, key, False)
            if node.is_map:
                # Only the value lives on until the map ends: a big map must not hold every
                # item's inputs, JSON copy and traceback (those are in the database now).
                calls[position] = _FREED
                outcome.output_json = outcome.usage = outcome.error = None

        concurrency = node.concurrency or (DEFAULT_ASYNC_CONCURRENCY if spec.is_async else DEFAULT_THREADS)
        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, count)):
                if spec.is_async or spec.timeout is not None:
                    tg.start_soon(self._async_worker, next_call, finished, queue)
                else:
                    tg.start_soon(self._sync_worker, next_call, finished, queue)

    async def _acquire(self, spec: TaskSpec[..., Any]) -> TaskResources | None:
        if spec.actor is None or self._resources is None:
            return None
        return await self._resources.acquire(spec.actor)

    async def _async_worker(
        self,
        next_call: Callable[[], tuple[int, Call] | None],
        finished: Callable[[int, Outcome], None],
        queue: WorkQueue,
    ) -> None:
        while True:
            taken = next_call()
            if taken is None:
                if await queue.more():
                    continue
                return
            position, call = taken
            finished(position, await attempt(call, limiter=self._threads))

    async def _sync_worker(
        self,
        next_call: Callable[[], tuple[int, Call] | None],
        finished: Callable[[int, Outcome], None],
        queue: WorkQueue,
    ) -> None:
        while True:
            try:
                # Abandoned on cancel: a sync task cannot be stopped, and Ctrl-C or `nimflow kill`
                # must not wait for it (its item was in flight; it is recomputed next time).
                done = await anyio.to_thread.run_sync(
                    _sync_slice, next_call, abandon_on_cancel=True, limiter=self._threads
                )
            except anyio.get_cancelled_exc_class():
                queue.stop()  # the abandoned slice takes no further calls
                raise
            if not done:
                if await queue.more():
                    continue
                return
            for position, call, outcome in done:
                if not settled(call, outcome):  # a failed first try with retries left
                    outcome = await attempt(call, outcome, limiter=self._threads)
                finished(position, outcome)


def _sync_slice(next_call: Callable[[], tuple[int, Call] | None]) -> list[tuple[int, Call, Outcome]]:
    """First tries of sync calls, back to back in this worker thread until the slice is used up."""
    done: list[tuple[int, Call, Outcome]] = []
    deadline = time.perf_counter() + SYNC_SLICE_SECONDS
    while time.perf_counter() < deadline and (taken := next_call()) is not None:
        position, call = taken
        outcome = try_sync(call, Outcome(attempts=1))
        outcome.ended_at = time.time()
        done.append((position, call, outcome))
    return done
