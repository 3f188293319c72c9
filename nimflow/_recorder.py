"""What a run did, as it happens: task-run rows (one per node and one per map item), the live
counters the progress display reads, and the failures the run reports."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from nimflow._attempt import Outcome, describe, details
from nimflow._exceptions import NimflowError
from nimflow._graph import Node
from nimflow._resources import UsageCounts
from nimflow._status import Status
from nimflow._store import Store, TaskRun

__all__ = ["ItemFailure", "NodeState", "Recorder"]


@dataclass
class NodeState:
    """Live counters of one node, read by the progress display; plain ints, no locking needed."""

    label: str
    is_map: bool = False
    total: int = 1
    done: int = 0
    cached: int = 0
    failed: int = 0
    status: Status = Status.PENDING
    started_at: float | None = None
    ended_at: float | None = None
    tokens: int = 0
    waited: int = 0  # items another run computed while this one waited for them
    taken_over: int = 0  # items another run had claimed and let go (it died), computed here


@dataclass
class ItemFailure:
    node: str
    label: str
    item: int | None
    error: str  # `Type: message`, the whole message
    traceback: str
    expected: bool = False  # a NimflowError, whose message says it all; no traceback needed

    def where(self) -> str:
        return self.label if self.item is None else f"{self.label}[{self.item}]"


class Recorder:
    """Owns the run's task-run rows; every row is built by `_row`, and written by the store's
    writer thread (so recording never blocks on the database)."""

    def __init__(self, run_id: str, store: Store, nodes: list[Node[Any]], *, worker: bool = False) -> None:
        self.run_id = run_id
        self._writer = store.writer
        # A worker process of a run (--workers) writes only the rows of the items it computed: the
        # run's own process writes the node rows, and the rows of the items it computed itself.
        self._worker = worker
        self.states = {node.id: NodeState(label=node.label, is_map=node.is_map) for node in nodes}
        self.failures: list[ItemFailure] = []

    # -- nodes --------------------------------------------------------------------------------

    def node_started(self, node: Node[Any]) -> None:
        state = self.states[node.id]
        state.status, state.started_at = Status.RUNNING, time.time()
        if not self._worker:
            self._writer.upsert(TaskRun, self._row(node, None, Status.RUNNING, started_at=state.started_at))

    def node_skipped(self, node: Node[Any], blocked: list[str]) -> None:
        state = self.states[node.id]
        state.status = Status.SKIPPED
        now = time.time()
        labels = ", ".join(self.states[u].label for u in blocked)
        error = f"not run: upstream {labels} did not succeed"
        if not self._worker:
            row = self._row(node, None, Status.SKIPPED, started_at=now, ended_at=now, error=error)
            self._writer.upsert(TaskRun, row)

    def node_failed(self, node: Node[Any], exc: BaseException) -> None:
        """A node that failed as a whole (a bad map input, an actor that could not start)."""
        self._fail(node, None, exc)
        self._end_node(node, Status.FAILED, error=details(exc))

    def node_cancelled(self, node: Node[Any]) -> None:
        if self.states[node.id].status is Status.RUNNING:
            self._end_node(node, Status.CANCELLED, error="cancelled before it finished")

    def single_done(self, node: Node[Any], outcome: Outcome, key: str | None, cache_hit: bool) -> None:
        """A node of one call, after `item_done` recorded the call."""
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        self._end_node(
            node,
            status,
            attempts=outcome.attempts,
            error=None if outcome.error is None else details(outcome.error),
            key=key,
            cache_hit=cache_hit,
            usage=outcome.usage,
            waited=self.states[node.id].waited,
            taken_over=self.states[node.id].taken_over,
        )

    def map_done(self, node: Node[Any], outcomes: list[Outcome]) -> None:
        state = self.states[node.id]
        count, failed = len(outcomes), sum(1 for o in outcomes if not o.ok)
        ratio = (count - failed) / count if count else 1.0
        error = None
        if ratio >= node.min_success_ratio:
            status = Status.SUCCEEDED
            if failed:
                error = f"{failed} of {count} items failed (allowed by min_success_ratio)"
        else:
            status = Status.FAILED
            first = min((f for f in self.failures if f.node == node.id), key=lambda f: f.item or 0)
            error = (
                f"{failed} of {count} items failed, more than min_success_ratio="
                f"{node.min_success_ratio} allows; first: item {first.item}: {first.error}"
            )
        self._end_node(
            node,
            status,
            attempts=sum(o.attempts for o in outcomes),
            error=error,
            cache_hit=count > 0 and state.cached == count,
            waited=state.waited,
            taken_over=state.taken_over,
        )

    # -- items --------------------------------------------------------------------------------

    def item_done(
        self,
        node: Node[Any],
        item: int | None,
        outcome: Outcome,
        key: str | None,
        cache_hit: bool,
        *,
        recorded: bool = False,
    ) -> None:
        """A finished call (a map item, or a single node's one call): counters, failure, item row
        (unless `recorded`: a worker of this run computed it and wrote its row)."""
        state = self.states[node.id]
        state.done += 1
        if cache_hit:
            state.cached += 1
        usage = outcome.usage
        if usage is not None:
            state.tokens += usage.prompt_tokens + usage.completion_tokens
        if outcome.error is not None:
            state.failed += 1
            self._fail(node, item, outcome.error)
        if item is not None and not recorded and not (self._worker and cache_hit):
            self._writer.insert(
                TaskRun,
                self._row(
                    node,
                    item,
                    Status.SUCCEEDED if outcome.ok else Status.FAILED,
                    attempts=outcome.attempts,
                    started_at=outcome.started_at,
                    ended_at=outcome.ended_at,
                    error=None if outcome.error is None else details(outcome.error),
                    key=key,
                    cache_hit=cache_hit,
                    usage=usage,
                ),
            )

    # -- rows ---------------------------------------------------------------------------------

    def _fail(self, node: Node[Any], item: int | None, exc: BaseException) -> None:
        if item is None and any(f.node == node.id and f.item is None for f in self.failures):
            return
        self.failures.append(
            ItemFailure(
                node.id,
                node.label,
                item,
                describe(exc),
                "".join(traceback.format_exception(exc)),
                expected=isinstance(exc, NimflowError),
            )
        )

    def _end_node(self, node: Node[Any], status: Status, **columns: Any) -> None:
        state = self.states[node.id]
        state.status, state.ended_at = status, time.time()
        row = self._row(node, None, status, started_at=state.started_at, ended_at=state.ended_at, **columns)
        if not self._worker:
            self._writer.upsert(TaskRun, row)

    def _row(
        self,
        node: Node[Any],
        item: int | None,
        status: Status,
        *,
        attempts: int = 0,
        started_at: float | None = None,
        ended_at: float | None = None,
        error: str | None = None,
        key: str | None = None,
        cache_hit: bool = False,
        usage: UsageCounts | None = None,
        waited: int = 0,
        taken_over: int = 0,
    ) -> dict[str, Any]:
        """The one shape of a task-run row, for nodes and map items alike."""
        return {
            "id": f"{self.run_id}/{node.id}" if item is None else f"{self.run_id}/{node.id}/{item}",
            "run_id": self.run_id,
            "node": node.id,
            "task": node.task.name,
            "item": item,
            "status": status.value,
            "cache_hit": cache_hit,
            "attempts": attempts,
            "started_at": started_at,
            "ended_at": ended_at,
            "error": error,
            "cache_key": key,
            "requests": usage.requests if usage is not None else 0,
            "retries": usage.retries if usage is not None else 0,
            "prompt_tokens": usage.prompt_tokens if usage is not None else 0,
            "completion_tokens": usage.completion_tokens if usage is not None else 0,
            "waited": waited,
            "taken_over": taken_over,
        }
