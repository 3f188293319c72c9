"""A run: validate the inputs once, build the graph, record the run, acquire its actors, execute,
record the outcome. Also the callable `@nf.workflow`: calling a workflow outside a workflow
body runs it here (the graph side, `_workflow`, only builds).

While it runs, nimflow._liveness beats its heartbeat and watches for Ctrl-C and `nimflow kill`
(SIGTERM); a run stopped by either is recorded as cancelled, with its running nodes, and says which.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from nimflow import _serialize
from nimflow._artifacts import record_artifact_outputs, record_lineage, resolve_artifact_inputs
from nimflow._context import bind_run
from nimflow._exceptions import RunCancelledError, RunFailedError, SerializationError, UserInputError
from nimflow._graph import current_builder
from nimflow._liveness import CTRL_C, Stop, few_malloc_arenas, heartbeat, quiet_gc, watch_signals
from nimflow._recorder import ItemFailure, NodeState
from nimflow._scheduler import Scheduler
from nimflow._status import Status
from nimflow._store import Run, Store
from nimflow._workers import Workers, share_maps, shared_caps
from nimflow._workflow import WorkflowSpec

if TYPE_CHECKING:
    from rich.console import Console

    from nimflow._resources import ActorRef
    from nimflow.actors.pool import ActorSession

__all__ = ["RunResult", "Workflow", "arun", "run", "validate_inputs", "workflow"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("nimflow")


@dataclass
class RunResult:
    """What a run produced: outputs, and what failed (items of a map allowed to fail included)."""

    run_id: str
    status: Status
    outputs: Any
    failures: list[ItemFailure] = field(default_factory=list)
    nodes: list[NodeState] = field(default_factory=list)
    served_by: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the finished main task (and so this result) when the
        # event loop closes, and printing every output there cost tens of ms on big runs.
        return (
            f"RunResult(run_id={self.run_id!r}, status={self.status.value!r}, "
            f"failures={len(self.failures)}, seconds={self.seconds:.2f})"
        )

    @property
    def items(self) -> int:
        """Map items, over all the run's maps."""
        return sum(n.total for n in self.nodes if n.is_map)

    @property
    def cached(self) -> int:
        return sum(n.cached for n in self.nodes)

    @property
    def tokens(self) -> int:
        return sum(n.tokens for n in self.nodes)


class Workflow(WorkflowSpec[P, R]):
    """What `@nf.workflow` makes: called inside a workflow body it is inlined; called anywhere
    else it runs, and returns its outputs."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if current_builder() is not None:
            return super().__call__(*args, **kwargs)
        bound = self.signature.bind(*args, **kwargs)
        return run(self, inputs=bound.arguments).outputs  # type: ignore[no-any-return]

    def run(self, **inputs: Any) -> RunResult:
        return run(self, inputs=inputs)


def workflow(fn: Callable[P, R]) -> Workflow[P, R]:
    """Make `fn` a workflow. Its body wires tasks together; it runs once, with promises."""
    return Workflow(fn)


# A progress display: given the live node states, it is entered for the run's duration.
ProgressFactory = Callable[[str, Mapping[str, NodeState]], Any]


def run(
    wf: WorkflowSpec[..., Any],
    /,
    *,
    inputs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
    servers: Mapping[str, str | object] | None = None,
    store: Store | None = None,
    progress: ProgressFactory | None = None,
    console: Console | None = None,
    source_file: str | None = None,
    workers: int = 1,
    **kw_inputs: Any,
) -> RunResult:
    """Run a workflow to the end and return its result; raise RunFailedError if it failed.

    Inputs are keyword arguments (`nf.run(wf, n=3)`) or, when an input shares a name with an
    option here (say `servers`), the `inputs` mapping. From the main thread, Ctrl-C and SIGTERM
    (`nimflow kill`) cancel the run: it is recorded as cancelled, then KeyboardInterrupt or
    RunCancelledError is raised. `workers=N` computes the cached maps' items in N processes
    (this one and N-1 workers, see nimflow._workers).
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    forked = Workers.fork(workers, wf) if main and use_cache else None  # before threads and the loop
    try:
        with quiet_gc():
            return anyio.run(
                functools.partial(
                    _execute,
                    wf,
                    {**(inputs or {}), **kw_inputs},
                    use_cache=use_cache,
                    servers=servers,
                    store=store,
                    progress=progress,
                    console=console,
                    source_file=source_file,
                    handle_signals=main,
                    workers=workers,
                    forked=forked,
                )
            )
    finally:
        if forked is not None:  # reaped whatever became of the run; never begun, they end now
            forked.wait()
        if main:  # the event loop's handlers are gone with it; put back what was there before
            signal.signal(signal.SIGTERM, previous)


async def arun(
    wf: WorkflowSpec[..., Any],
    /,
    *,
    inputs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
    servers: Mapping[str, str | object] | None = None,
    store: Store | None = None,
    progress: ProgressFactory | None = None,
    console: Console | None = None,
    source_file: str | None = None,
    workers: int = 1,
    **kw_inputs: Any,
) -> RunResult:
    """The async form of `run`, for callers already on an event loop (whose signals are theirs)."""
    return await _execute(
        wf,
        {**(inputs or {}), **kw_inputs},
        use_cache=use_cache,
        servers=servers,
        store=store,
        progress=progress,
        console=console,
        source_file=source_file,
        handle_signals=False,
        workers=workers,
    )


async def _execute(
    wf: WorkflowSpec[..., Any],
    given: Mapping[str, Any],
    *,
    use_cache: bool,
    servers: Mapping[str, str | object] | None,
    store: Store | None,
    progress: ProgressFactory | None,
    console: Console | None,
    source_file: str | None,
    handle_signals: bool,
    workers: int = 1,
    forked: Workers | None = None,
) -> RunResult:
    few_malloc_arenas()  # before the run starts its threads
    if workers < 1:
        raise UserInputError(f"workers must be 1 or more, not {workers}.")
    if workers > 1 and not use_cache:
        # Workers share a map's items through claims on cache keys, which a run that recomputes
        # everything does not take: each worker would compute every item again.
        log.warning("--workers needs the cache (it shares items through it): --no-cache runs in one process")
        workers = 1
    own_store = store is None
    store = store or Store.open()
    try:
        resolved, consumed = resolve_artifact_inputs(wf, given, store)  # artifact.query() inputs
        values = validate_inputs(wf, resolved)
        graph = wf.build()
        share_maps(graph, workers)
        envs = {node.task.actor.name: node.task.actor for node in graph if node.task.actor is not None}
        if servers:
            _check_servers(servers, envs.values())
    except BaseException:
        if own_store:
            store.close()
        raise
    run_id = uuid.uuid4().hex[:12]
    started = time.time()
    row = Run(
        id=run_id,
        workflow=wf.name,
        file=source_file,
        inputs=_serialize.canonical(_inputs_json(wf, values)),
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=started,
        heartbeat_at=started,
    )
    store.add(row)
    record_lineage(run_id, consumed, store)
    actors = _actor_session(store, servers, console) if envs else None
    scheduler = Scheduler(graph, run_id, store, values, read_cache=use_cache, resources=actors)
    result = RunResult(
        run_id=run_id, status=Status.RUNNING, outputs=None, nodes=list(scheduler.states.values())
    )
    stop = Stop()
    pool: Workers | None = None
    try:
        async with AsyncExitStack() as stack:
            stack.enter_context(shared_caps(envs.values(), workers))
            if workers > 1:
                pool = forked or Workers.spawn(workers, wf, source_file)
                pool.begin(run_id, _inputs_json(wf, values), use_cache, servers, store.url)
                stack.callback(pool.stop)  # on a failure or cancel; a no-op once they ended
            if actors is not None:
                await stack.enter_async_context(actors)
            if progress is not None:
                stack.enter_context(progress(run_id, scheduler.states))
            stack.enter_context(bind_run(run_id, store))
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(heartbeat, store, row)
                    tg.start_soon(scheduler.cache.keep_claims)
                    if handle_signals:
                        await tg.start(watch_signals, tg.cancel_scope, stop)
                    if pool is not None:  # the nodes before the maps run while the workers start
                        scheduler.peers_ready = anyio.Event()
                        tg.start_soon(_when_ready, pool, scheduler.peers_ready)
                    result.outputs = await scheduler.execute()
                    if pool is not None:
                        for error in await anyio.to_thread.run_sync(pool.wait, abandon_on_cancel=True):
                            log.warning("%s", error)
                    tg.cancel_scope.cancel()  # the heartbeat and the signal watch end with the run
            finally:  # what served each actor is known once the run has acquired it
                if actors is not None:
                    result.served_by = actors.served_by()
                    row.served_by = json.dumps(result.served_by)
        result.failures = _sorted(scheduler.failures)
        if stop.reason is not None:
            result.status, row.error = Status.CANCELLED, stop.reason
        elif any(s.status is not Status.SUCCEEDED for s in scheduler.states.values()):
            result.status, row.error = Status.FAILED, _failure_summary(scheduler, result.failures)
        else:
            result.status = Status.SUCCEEDED
            row.outputs = _outputs_json(wf, result.outputs)
            record_artifact_outputs(wf, result.outputs, run_id, store)
    except BaseException as exc:
        result.failures = _sorted(scheduler.failures)
        if isinstance(exc, KeyboardInterrupt | anyio.get_cancelled_exc_class()):
            result.status = Status.CANCELLED
            row.error = CTRL_C if isinstance(exc, KeyboardInterrupt) else "cancelled"
        else:
            result.status = Status.FAILED
            row.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.seconds = time.time() - started
        row.status, row.ended_at = result.status.value, time.time()
        row.heartbeat_at = row.ended_at
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, store, row, own_store)
    if stop.signum == signal.SIGINT:
        raise KeyboardInterrupt
    if stop.reason is not None:
        raise RunCancelledError(
            f"run {run_id} of {wf.name} was {stop.reason}; finished items are saved: "
            "run the same command to resume.",
            run_id,
            result,
        )
    if result.status is Status.FAILED:
        raise RunFailedError(f"run {run_id} of {wf.name} failed: {row.error}", run_id, result)
    return result


def _check_servers(servers: Mapping[str, str | object], actors: Iterable[ActorRef]) -> None:
    # The actor pool is imported only by runs that use it or name it: the others pay neither
    # its import time nor its memory. (It does not import this module: no circle.)
    from nimflow.actors.environment import ActorEnvironment
    from nimflow.actors.overrides import check_overrides

    check_overrides(servers, [actor for actor in actors if isinstance(actor, ActorEnvironment)])


def _actor_session(
    store: Store, servers: Mapping[str, str | object] | None, console: Console | None
) -> ActorSession:
    from nimflow.actors.pool import ActorSession

    # The pool takes each value as it is: a server spec string or an override object.
    return ActorSession(store, servers or {}, console=console)  # type: ignore[arg-type]


def _close(store: Store, row: Run, own_store: bool) -> None:
    """Everything queued is written before the run row says it has ended."""
    try:
        store.flush()
    finally:
        store.add(row)
        if own_store:
            store.close()


def validate_inputs(wf: WorkflowSpec[..., Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs by name with defaults, coerced to their hints; a clear error for a wrong one."""
    params = wf.signature.parameters
    unknown = [name for name in inputs if name not in params]
    if unknown:
        raise UserInputError(
            f"workflow {wf.name} has no input {unknown}; its inputs are: {list(params) or 'none'}."
        )
    values: dict[str, Any] = {}
    for name, param in params.items():
        hint = wf.input_hints[name]
        if name in inputs:
            try:
                values[name] = _serialize.validate(inputs[name], hint, f"workflow input {name!r}")
            except SerializationError as exc:
                raise UserInputError(str(exc)) from exc
        elif param.default is not param.empty:
            values[name] = param.default
        else:
            raise UserInputError(
                f"workflow {wf.name} needs input {name!r} ({_serialize.type_name(hint)}); "
                f"pass --{name.replace('_', '-')} VALUE."
            )
    return values


def _inputs_json(wf: WorkflowSpec[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: _serialize.to_jsonable(value, wf.input_hints[name], f"workflow input {name!r}")
        for name, value in values.items()
    }


def _outputs_json(wf: WorkflowSpec[..., Any], outputs: Any) -> str:
    try:
        return _serialize.dumps(outputs, wf.return_hint, f"outputs of workflow {wf.name}")
    except SerializationError:
        # Outputs are all in the cache already; keep the run a success and say why they're missing.
        return json.dumps({"unserializable": repr(outputs)[:2000]})


async def _when_ready(pool: Workers, ready: anyio.Event) -> None:
    await anyio.to_thread.run_sync(pool.ready, abandon_on_cancel=True)
    ready.set()


def _sorted(failures: list[ItemFailure]) -> list[ItemFailure]:
    return sorted(failures, key=lambda f: (int(f.node[1:]), f.item or 0))


def _failure_summary(scheduler: Scheduler, failures: list[ItemFailure]) -> str:
    if not failures:
        bad = [s.label for s in scheduler.states.values() if s.status is not Status.SUCCEEDED]
        return f"not completed: {', '.join(bad)}"
    first = failures[0]
    more = len(failures) - 1
    return f"{first.where()}: {first.error}" + (f" (and {more} more failures)" if more else "")
