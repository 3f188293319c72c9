"""Executes a Graph on an anyio task group: caching, retries, timeouts, map fan-out, task-run rows.

Every node is a task in one task group; it waits for its upstream nodes and runs as soon as they
are done, so independent nodes run concurrently. A failed node does not cancel its siblings:
what they finish is cached and kept, and only the nodes downstream of the failure are skipped.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from nimflow import _serialize
from nimflow._cache import cache_key
from nimflow._exceptions import NimflowError, SerializationError
from nimflow._store import Cached, CacheEntry, Store, TaskRun
from nimflow._workflow import Graph, Node, Promise

if TYPE_CHECKING:
    from nimflow._resources import TaskResources
    from nimflow._task import TaskSpec
    from nimflow.actors.pool import ActorSession

log = logging.getLogger("nimflow")

DEFAULT_ASYNC_CONCURRENCY = 256
DEFAULT_THREADS = 16
# A worker thread runs map items back to back for up to this long before handing back to the
# event loop: fast sync tasks then cost one thread hop per slice instead of one per item.
SYNC_SLICE_SECONDS = 0.02


@dataclass
class NodeState:
    """Live counters of one node, read by the progress display; plain ints, no locking needed."""

    label: str
    is_map: bool = False
    total: int = 1
    done: int = 0
    cached: int = 0
    failed: int = 0
    status: str = "pending"  # pending | running | succeeded | failed | skipped
    started_at: float | None = None
    ended_at: float | None = None
    tokens: int = 0


@dataclass
class ItemFailure:
    node: str
    label: str
    item: int | None
    error: str  # one line
    traceback: str
    expected: bool = False  # a NimflowError, whose message says it all; no traceback needed

    def where(self) -> str:
        return self.label if self.item is None else f"{self.label}[{self.item}]"


@dataclass(slots=True)
class _Outcome:
    ok: bool
    value: Any = None
    attempts: int = 0
    error: BaseException | None = None
    tb: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    output_json: str | None = None
    usage: Any = None


@dataclass(slots=True)
class _Item:
    index: int | None
    kwargs: dict[str, Any]
    key: str | None = None


@dataclass
class Runner:
    graph: Graph
    run_id: str
    store: Store
    inputs: dict[str, Any]
    read_cache: bool = True
    actors: ActorSession | None = None
    states: dict[str, NodeState] = field(default_factory=dict)
    failures: list[ItemFailure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._events = {node.id: anyio.Event() for node in self.graph}
        self._threads = anyio.CapacityLimiter(DEFAULT_THREADS)
        self._warned_source: set[str] = set()
        for node in self.graph:
            self.states[node.id] = NodeState(label=node.label, is_map=node.is_map)

    # -- the graph ----------------------------------------------------------------------------

    async def execute(self) -> Any:
        async with anyio.create_task_group() as tg:
            for node in self.graph:
                tg.start_soon(self._run_node, node)
        if any(state.status != "succeeded" for state in self.states.values()):
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

    async def _run_node(self, node: Node) -> None:
        state = self.states[node.id]
        for upstream in node.upstream:
            await self._events[upstream].wait()
        try:
            blocked = [u for u in node.upstream if self.states[u].status != "succeeded"]
            if blocked:
                state.status = "skipped"
                labels = ", ".join(self.states[u].label for u in blocked)
                self._write_node_row(node, "skipped", error=f"not run: upstream {labels} did not succeed")
                return
            state.status, state.started_at = "running", time.time()
            self._write_node_row(node, "running")
            try:
                if node.is_map:
                    await self._run_map(node)
                else:
                    await self._run_single(node)
            except Exception as exc:  # a bad map input, a serialization error: the node fails, siblings go on
                self._fail_node(node, exc)
        finally:
            state.ended_at = time.time()
            self._events[node.id].set()

    def _fail_node(self, node: Node, exc: BaseException, tb: str | None = None) -> None:
        state = self.states[node.id]
        state.status = "failed"
        tb = tb or "".join(traceback.format_exception(exc))
        message = _one_line(exc)
        if not any(f.node == node.id and f.item is None for f in self.failures):
            self.failures.append(
                ItemFailure(node.id, node.label, None, message, tb, expected=isinstance(exc, NimflowError))
            )
        self.store.writer.update(
            TaskRun, self._row_id(node), {"status": "failed", "ended_at": time.time(), "error": tb}
        )

    # -- one task call ------------------------------------------------------------------------

    async def _run_single(self, node: Node) -> None:
        kwargs = self._resolve(node.inputs)
        item = _Item(None, kwargs)
        outcomes = await self._run_items(node, [item])
        outcome = outcomes[0]
        state = self.states[node.id]
        if outcome.ok:
            self._values[node.id] = outcome.value
            state.status = "succeeded"
            self.store.writer.update(
                TaskRun, self._row_id(node), self._row_end(outcome, item.key, state.cached > 0)
            )
        else:
            assert outcome.error is not None
            self.store.writer.update(TaskRun, self._row_id(node), self._row_end(outcome, item.key, False))
            self.states[node.id].status = "failed"

    # -- map_task -----------------------------------------------------------------------------

    async def _run_map(self, node: Node) -> None:
        resolved = self._resolve(node.inputs)
        lists: dict[str, Sequence[Any]] = {}
        for name in node.mapped:
            values = resolved[name]
            if not isinstance(values, list | tuple):
                raise NimflowError(
                    f"{node.label}: map_task input {name!r} must be a list, got {type(values).__name__}."
                )
            lists[name] = values
        lengths = {name: len(values) for name, values in lists.items()}
        if len(set(lengths.values())) > 1:
            raise NimflowError(f"{node.label}: the mapped lists differ in length: {lengths}.")
        count = next(iter(lengths.values()))
        fixed = {k: v for k, v in resolved.items() if k not in lists}
        items = [_Item(i, {**fixed, **{n: v[i] for n, v in lists.items()}}) for i in range(count)]
        state = self.states[node.id]
        state.total = count
        outcomes = await self._run_items(node, items)

        failed = [i for i, o in enumerate(outcomes) if not o.ok]
        self._values[node.id] = [o.value if o.ok else None for o in outcomes]
        ratio = (count - len(failed)) / count if count else 1.0
        summary: dict[str, Any] = {
            "ended_at": time.time(),
            "attempts": sum(o.attempts for o in outcomes),
            "cache_hit": count > 0 and state.cached == count,
        }
        if ratio >= node.min_success_ratio:
            state.status = "succeeded"
            summary["status"] = "succeeded"
            if failed:
                summary["error"] = f"{len(failed)} of {count} items failed (allowed by min_success_ratio)"
        else:
            state.status = "failed"
            summary["status"] = "failed"
            first = next(f for f in self.failures if f.node == node.id)
            summary["error"] = (
                f"{len(failed)} of {count} items failed, more than min_success_ratio="
                f"{node.min_success_ratio} allows; first: item {first.item}: {first.error}"
            )
        self.store.writer.update(TaskRun, self._row_id(node), summary)

    # -- items: cache lookup, then execution ---------------------------------------------------

    async def _run_items(self, node: Node, items: list[_Item]) -> list[_Outcome]:
        spec = node.task
        outcomes: list[_Outcome | None] = [None] * len(items)
        pending = items
        if spec.cache and items:
            served_by = await self.actors.identity(spec.actor) if (spec.actor is not None and self.actors) else None
            # Inputs that are not mapped are the same for every item: serialize them once.
            keyed = [name for name in items[0].kwargs if name not in spec.cache_ignore]
            constant = {
                name: self._jsonable(spec, name, items[0].kwargs[name])
                for name in keyed
                if name not in node.mapped
            }
            for item in items:
                inputs = {
                    name: self._jsonable(spec, name, item.kwargs[name])
                    for name in keyed
                    if name in node.mapped
                }
                item.key = cache_key(spec.name, spec.cache_version, {**constant, **inputs}, served_by)
            if self.read_cache:
                hits = await anyio.to_thread.run_sync(self.store.cached, [i.key for i in items if i.key])
                pending = []
                for position, item in enumerate(items):
                    entry = hits.get(item.key or "")
                    if entry is None:
                        pending.append(item)
                    else:
                        outcomes[position] = self._replay(node, item, entry)
                        item.kwargs = {}
        if pending:
            position_of = {id(item): pos for pos, item in enumerate(items)}
            concurrency = node.concurrency or (
                DEFAULT_ASYNC_CONCURRENCY if spec.is_async else DEFAULT_THREADS
            )
            queue = iter(pending)
            lock = threading.Lock()

            def next_item() -> _Item | None:
                with lock:
                    return next(queue, None)

            def record(item: _Item, outcome: _Outcome) -> None:
                outcomes[position_of[id(item)]] = outcome
                self._record(node, item, outcome)
                if node.is_map:
                    # Only the value lives on until the map ends: a big map must not hold every
                    # item's inputs, JSON copy and traceback (those are in the database now).
                    item.kwargs = {}
                    outcome.output_json, outcome.tb, outcome.usage = None, "", None

            # A server that cannot be had fails the node once, with its own clear message.
            ctx = await self._actor_context(spec)
            worker = self._async_worker if spec.is_async or spec.timeout else self._sync_worker
            async with anyio.create_task_group() as tg:
                for _ in range(min(concurrency, len(pending))):
                    tg.start_soon(worker, node, ctx, next_item, record)
        return [o if o is not None else _Outcome(ok=False) for o in outcomes]

    @staticmethod
    def _jsonable(spec: TaskSpec[..., Any], name: str, value: Any) -> Any:
        return _serialize.to_jsonable(value, spec.input_hints[name], f"{spec.name}: input {name!r}")

    def _replay(self, node: Node, item: _Item, entry: Cached) -> _Outcome:
        spec = node.task
        if entry.source_hash != spec.source_hash and spec.name not in self._warned_source:
            self._warned_source.add(spec.name)
            log.warning(
                "task %s: its source changed since these results were cached under cache_version %r; "
                "they are reused. Bump cache_version (or run with --no-cache) to recompute.",
                spec.name,
                spec.cache_version,
            )
        now = time.time()
        value = _serialize.loads(entry.output, spec.return_hint, f"{spec.name}: cached output")
        outcome = _Outcome(ok=True, value=value, started_at=now, ended_at=now)
        state = self.states[node.id]
        state.done += 1
        state.cached += 1
        if node.is_map:
            self.store.writer.insert(TaskRun, self._item_row(node, item, outcome, cache_hit=True))
        return outcome

    # -- workers ------------------------------------------------------------------------------

    async def _async_worker(
        self,
        node: Node,
        ctx: TaskResources | None,
        next_item: Callable[[], _Item | None],
        record: Callable[[_Item, _Outcome], None],
    ) -> None:
        spec = node.task
        while (item := next_item()) is not None:
            outcome = _Outcome(ok=False, started_at=time.time())
            for attempt in range(1, spec.retries + 2):
                outcome.attempts = attempt
                try:
                    with self._task_context(ctx) as usage:
                        if spec.is_async:
                            with anyio.fail_after(spec.timeout) if spec.timeout else nullcontext():
                                value = await spec.fn(**item.kwargs)
                        else:  # a sync task with a timeout: the thread cannot be stopped, only abandoned
                            with anyio.fail_after(spec.timeout):
                                value = await anyio.to_thread.run_sync(
                                    lambda: spec.fn(**item.kwargs),
                                    abandon_on_cancel=True,
                                    limiter=self._threads,
                                )
                    outcome.usage = usage
                    self._finish(spec, item, outcome, value)
                    break
                except TimeoutError as exc:
                    error = _timeout_error(spec)
                    error.__cause__ = exc
                    outcome.error, outcome.tb = error, "".join(traceback.format_exception(error))
                except Exception as exc:
                    outcome.error, outcome.tb = exc, "".join(traceback.format_exception(exc))
                if attempt <= spec.retries:
                    await anyio.sleep(_backoff(attempt))
            outcome.ended_at = time.time()
            record(item, outcome)

    async def _sync_worker(
        self,
        node: Node,
        ctx: TaskResources | None,
        next_item: Callable[[], _Item | None],
        record: Callable[[_Item, _Outcome], None],
    ) -> None:
        spec = node.task
        while True:
            finished = await anyio.to_thread.run_sync(
                self._sync_slice, spec, next_item, ctx, limiter=self._threads
            )
            for item, outcome in finished:
                record(item, outcome)
            if not finished:
                return

    def _sync_slice(
        self, spec: TaskSpec[..., Any], next_item: Callable[[], _Item | None], ctx: TaskResources | None
    ) -> list[tuple[_Item, _Outcome]]:
        """Runs items in this worker thread until the slice is used up; returns them to be recorded."""
        finished: list[tuple[_Item, _Outcome]] = []
        deadline = time.perf_counter() + SYNC_SLICE_SECONDS
        while time.perf_counter() < deadline and (item := next_item()) is not None:
            outcome = _Outcome(ok=False, started_at=time.time())
            for attempt in range(1, spec.retries + 2):
                outcome.attempts = attempt
                try:
                    with self._task_context(ctx) as usage:
                        value = spec.fn(**item.kwargs)
                    outcome.usage = usage
                    self._finish(spec, item, outcome, value)
                    break
                except Exception as exc:
                    outcome.error, outcome.tb = exc, "".join(traceback.format_exception(exc))
                if attempt <= spec.retries:
                    time.sleep(_backoff(attempt))
            outcome.ended_at = time.time()
            finished.append((item, outcome))
        return finished

    def _finish(self, spec: TaskSpec[..., Any], item: _Item, outcome: _Outcome, value: Any) -> None:
        """Accept a returned value; for a cached task it must serialize under its hint first."""
        if spec.cache:
            try:
                outcome.output_json = (
                    _serialize.adapter(spec.return_hint).dump_json(value, warnings="error").decode()
                )
            except Exception as exc:
                raise SerializationError(
                    f"{spec.name}: its return value does not match the return hint "
                    f"{_serialize.type_name(spec.return_hint)} and is not cached ({_one_line(exc)}). "
                    "Fix the hint or the value."
                ) from exc
        outcome.ok, outcome.value = True, value

    async def _actor_context(self, spec: TaskSpec[..., Any]) -> TaskResources | None:
        if spec.actor is None:
            return None
        if self.actors is None:  # pragma: no cover - the run opens a session whenever a graph has actors
            raise NimflowError(
                f"task {spec.name} needs actor {spec.actor.name!r} but the run has no actor session"
            )
        return await self.actors.acquire(spec.actor)

    @staticmethod
    def _task_context(ctx: TaskResources | None) -> AbstractContextManager[Any]:
        return nullcontext() if ctx is None else ctx.scope()

    # -- rows ---------------------------------------------------------------------------------

    def _record(self, node: Node, item: _Item, outcome: _Outcome) -> None:
        state = self.states[node.id]
        state.done += 1
        usage = outcome.usage
        if usage is not None:
            state.tokens += usage.prompt_tokens + usage.completion_tokens
        if outcome.ok:
            if outcome.output_json is not None and item.key is not None:
                self.store.writer.upsert(
                    CacheEntry,
                    {
                        "key": item.key,
                        "task": node.task.name,
                        "cache_version": node.task.cache_version,
                        "source_hash": node.task.source_hash,
                        "output": outcome.output_json,
                        "created_at": time.time(),
                        "run_id": self.run_id,
                    },
                )
        else:
            state.failed += 1
            assert outcome.error is not None
            error = outcome.error
            self.failures.append(
                ItemFailure(
                    node.id,
                    node.label,
                    item.index,
                    _one_line(error),
                    outcome.tb,
                    isinstance(error, NimflowError),
                )
            )
        if node.is_map:
            self.store.writer.insert(TaskRun, self._item_row(node, item, outcome, cache_hit=False))

    def _row_id(self, node: Node, item: int | None = None) -> str:
        return f"{self.run_id}/{node.id}" if item is None else f"{self.run_id}/{node.id}/{item}"

    def _write_node_row(self, node: Node, status: str, error: str | None = None) -> None:
        now = time.time()
        self.store.writer.insert(
            TaskRun,
            {
                **_EMPTY_ROW,
                "id": self._row_id(node),
                "run_id": self.run_id,
                "node": node.id,
                "task": node.task.name,
                "status": status,
                "started_at": now,
                "ended_at": now if status == "skipped" else None,
                "error": error,
            },
        )

    def _row_end(self, outcome: _Outcome, key: str | None, cache_hit: bool) -> dict[str, Any]:
        return {
            "status": "succeeded" if outcome.ok else "failed",
            "cache_hit": cache_hit,
            "attempts": outcome.attempts,
            "ended_at": time.time(),
            "error": None if outcome.ok else outcome.tb,
            "cache_key": key,
            **_usage_columns(outcome.usage),
        }

    def _item_row(self, node: Node, item: _Item, outcome: _Outcome, cache_hit: bool) -> dict[str, Any]:
        return {
            "id": self._row_id(node, item.index),
            "run_id": self.run_id,
            "node": node.id,
            "task": node.task.name,
            "item": item.index,
            "status": "succeeded" if outcome.ok else "failed",
            "cache_hit": cache_hit,
            "attempts": outcome.attempts,
            "started_at": outcome.started_at,
            "ended_at": outcome.ended_at,
            "error": None if outcome.ok else outcome.tb,
            "cache_key": item.key,
            **_usage_columns(outcome.usage),
        }


_EMPTY_ROW: dict[str, Any] = {
    "item": None,
    "cache_hit": False,
    "attempts": 0,
    "cache_key": None,
    "requests": 0,
    "retries": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
}


def _usage_columns(usage: Any) -> dict[str, int]:
    if usage is None:
        return {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
    return {
        "requests": usage.requests,
        "retries": usage.retries,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
    }


def _backoff(attempt: int) -> float:
    return float(min(0.1 * 2 ** (attempt - 1), 2.0))


def _timeout_error(spec: TaskSpec[..., Any]) -> NimflowError:
    return NimflowError(
        f"task {spec.name} timed out after {spec.timeout} s (timeout={spec.timeout}); raise it or split the work."
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
