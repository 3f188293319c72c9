"""A run: validate inputs, build the graph, record the run, execute, record the outcome."""

from __future__ import annotations

import functools
import gc
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from nimflow import _serialize
from nimflow._artifacts import as_query, record_artifact_outputs, record_lineage, resolve_artifact_inputs
from nimflow._context import bind_run
from nimflow._runner import ItemFailure, NodeState, Runner
from nimflow._store import Run, Store
from nimflow._workflow import WorkflowSpec

if TYPE_CHECKING:
    from rich.console import Console

from nimflow._exceptions import NimflowError, RunFailedError, SerializationError, UserInputError


@dataclass
class RunResult:
    """What a run produced: outputs, and what failed (items of a map allowed to fail included)."""

    run_id: str
    status: str
    outputs: Any
    failures: list[ItemFailure] = field(default_factory=list)
    nodes: list[NodeState] = field(default_factory=list)
    served_by: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the finished main task (and so this result) when the
        # event loop closes, and printing every output there cost tens of ms on big runs.
        return (
            f"RunResult(run_id={self.run_id!r}, status={self.status!r}, "
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


# A progress display: given the runner's live node states, it is entered for the run's duration.
ProgressFactory = Callable[[str, Mapping[str, NodeState]], Any]


def run(
    wf: WorkflowSpec[..., Any],
    /,
    *,
    inputs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
    servers: Mapping[str, str] | None = None,
    store: Store | None = None,
    progress: ProgressFactory | None = None,
    console: Console | None = None,
    source_file: str | None = None,
    **kw_inputs: Any,
) -> RunResult:
    """Run a workflow to the end and return its result; raise RunFailedError if it failed.

    Inputs are keyword arguments (`nf.run(wf, n=3)`) or, when an input shares a name with an
    option here (say `servers`), the `inputs` mapping.
    """
    with _quiet_gc():
        return anyio.run(
            functools.partial(
                arun,
                wf,
                inputs=inputs,
                use_cache=use_cache,
                servers=servers,
                store=store,
                progress=progress,
                console=console,
                source_file=source_file,
                **kw_inputs,
            )
        )


async def arun(
    wf: WorkflowSpec[..., Any],
    /,
    *,
    inputs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
    servers: Mapping[str, str] | None = None,
    store: Store | None = None,
    progress: ProgressFactory | None = None,
    console: Console | None = None,
    source_file: str | None = None,
    **kw_inputs: Any,
) -> RunResult:
    """The async form of `run`, for callers already on an event loop."""
    graph = wf.build()
    envs = {node.task.actor.name: node.task.actor for node in graph if node.task.actor is not None}
    if servers:
        from nimflow.actors.overrides import check_overrides

        check_overrides(servers, envs.values())
    own_store = store is None
    store = store or Store.open()
    try:
        given, consumed = resolve_artifact_inputs(wf, {**(inputs or {}), **kw_inputs}, store)
        values = validate_inputs(wf, given)
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
        started_at=started,
    )
    store.add(row)
    record_lineage(run_id, consumed, store)
    runner = Runner(graph=graph, run_id=run_id, store=store, inputs=values, read_cache=use_cache)
    result = RunResult(run_id=run_id, status="running", outputs=None, nodes=list(runner.states.values()))
    try:
        async with AsyncExitStack() as stack:
            if envs:
                from nimflow.actors.pool import ActorSession

                runner.actors = await stack.enter_async_context(
                    ActorSession(store, servers or {}, console=console)
                )
            if progress is not None:
                stack.enter_context(progress(run_id, runner.states))
            stack.enter_context(bind_run(run_id, store))
            try:
                result.outputs = await runner.execute()
            finally:  # what served each actor is known once the run has acquired it
                if runner.actors is not None:
                    result.served_by = runner.actors.served_by()
                    row.served_by = json.dumps(result.served_by)
        result.failures = sorted(runner.failures, key=lambda f: (int(f.node[1:]), f.item or 0))
        failed = [s for s in runner.states.values() if s.status != "succeeded"]
        result.status = "failed" if failed else "succeeded"
        if result.status == "succeeded":
            row.outputs = _outputs_json(wf, result.outputs)
            record_artifact_outputs(wf, result.outputs, run_id, store)
        else:
            row.error = _failure_summary(runner)
    except BaseException as exc:
        cancelled = isinstance(exc, (KeyboardInterrupt, anyio.get_cancelled_exc_class()))
        result.status = "cancelled" if cancelled else "failed"
        row.error = row.error or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.seconds = time.time() - started
        row.status, row.ended_at = result.status, time.time()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, store, row, own_store)
    if result.status == "failed":
        raise RunFailedError(f"run {run_id} of {wf.name} failed: {row.error}", run_id, result)
    return result


@contextmanager
def _quiet_gc() -> Iterator[None]:
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
        if name in inputs and as_query(inputs[name]) is not None:
            values[name] = inputs[name]  # an artifact version, read when the run starts
        elif name in inputs:
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


def _failure_summary(runner: Runner) -> str:
    if not runner.failures:
        bad = [s.label for s in runner.states.values() if s.status != "succeeded"]
        return f"not completed: {', '.join(bad)}"
    first = runner.failures[0]
    more = len(runner.failures) - 1
    return f"{first.where()}: {first.error}" + (f" (and {more} more failures)" if more else "")


__all__ = ["NimflowError", "RunResult", "arun", "run", "validate_inputs"]
