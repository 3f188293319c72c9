"""@workflow's graph side and map_task: a workflow body runs once with promises and yields a Graph.

As in Flyte, a workflow body only wires tasks together: the values do not exist yet while it
runs, so Python logic on them (if, for, f-strings, arithmetic) is an error that says so.
Building never executes anything: running a workflow is the run module's job (`nimflow._run`,
whose `workflow` decorator makes the callable form).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from nimflow._exceptions import WorkflowDefinitionError
from nimflow._graph import Graph, GraphBuilder, building, current_builder, map_items
from nimflow._task import TaskSpec, default_name

__all__ = ["MapTask", "WorkflowSpec", "map_task"]

P = ParamSpec("P")
R = TypeVar("R")


class WorkflowSpec(Generic[P, R]):
    """A decorated workflow: its inputs and outputs, and the graph its body wires.

    Called inside another workflow body it is inlined into that graph. Outside one, the run
    module's subclass (what `nf.workflow` returns) runs it.
    """

    def __init__(self, fn: Callable[P, R], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or default_name(fn)
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:
            raise WorkflowDefinitionError(
                f"cannot resolve the type hints of workflow {self.name!r}: {exc}"
            ) from exc
        self.input_hints = {name: hints.get(name, Any) for name in self.signature.parameters}
        self.return_hint = hints.get("return", Any)
        self.__doc__ = fn.__doc__
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        builder = current_builder()
        if builder is None:
            raise WorkflowDefinitionError(
                f"workflow {self.name} only builds a graph here; run it with nf.run({self.fn.__name__}) "
                "or decorate it with @nf.workflow."
            )
        with builder.inline(self.name):
            return self.fn(*args, **kwargs)

    def build(self) -> Graph[TaskSpec[..., Any]]:
        """Run the body once with promises for the inputs and return the graph it wires."""
        builder: GraphBuilder[TaskSpec[..., Any]] = GraphBuilder(self.name)
        inputs = builder.inputs(list(self.signature.parameters))
        with building(builder):
            try:
                output = self.fn(**inputs)  # type: ignore[arg-type, call-arg]
            except RecursionError as exc:
                raise WorkflowDefinitionError(f"workflow {self.name!r} recurses without end") from exc
        return builder.graph(output)


@dataclass(eq=False)
class MapTask:
    """`map_task(task)(xs=[...])`: one invocation of the task per item, each cached on its own."""

    task: TaskSpec[..., Any]
    fixed: dict[str, Any] = field(default_factory=dict)  # from functools.partial
    concurrency: int | None = None
    min_success_ratio: float = 1.0

    def __call__(self, **mapped_inputs: Any) -> list[Any]:
        name = self.task.name
        if not mapped_inputs:
            raise WorkflowDefinitionError(
                f"map_task({name!r}) needs the lists to map over as keyword arguments, "
                "e.g. map_task(t)(items=xs)."
            )
        params = self.task.signature.parameters
        unknown = [n for n in [*mapped_inputs, *self.fixed] if n not in params]
        if unknown:
            raise WorkflowDefinitionError(
                f"map_task({name!r}): {unknown} are not inputs of the task (inputs: {list(params)})."
            )
        both = set(mapped_inputs) & set(self.fixed)
        if both:
            raise WorkflowDefinitionError(f"map_task({name!r}): {sorted(both)} are both mapped and fixed.")
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty and n not in mapped_inputs and n not in self.fixed
        ]
        if missing:
            raise WorkflowDefinitionError(
                f"map_task({name!r}): no value for {missing}; map over them or fix them with functools.partial."
            )
        inputs = {**self.fixed, **mapped_inputs}
        builder = current_builder()
        if builder is None:  # outside a workflow: a plain loop, like calling a task directly
            return [
                self.task.fn(**kwargs)
                for kwargs in map_items(f"map_task({name!r})", inputs, list(mapped_inputs))
            ]
        return builder.add_map(  # type: ignore[return-value]
            self.task, inputs, tuple(mapped_inputs), self.concurrency, self.min_success_ratio
        )


def map_task(
    target: TaskSpec[..., Any] | functools.partial[Any],
    concurrency: int | None = None,
    min_success_ratio: float = 1.0,
) -> MapTask:
    """Fan a task out over lists. `target` is a task or `functools.partial(task, fixed=...)`.

    `concurrency` caps items in flight; with `min_success_ratio` below 1, failed items become
    None and the run lists them with their errors instead of failing.
    """
    fixed: dict[str, Any] = {}
    spec: Any = target
    if isinstance(target, functools.partial):
        if target.args:
            raise WorkflowDefinitionError(
                "map_task: give functools.partial keyword arguments only, e.g. partial(t, repo_id=x)."
            )
        fixed = dict(target.keywords)
        spec = target.func
    if not isinstance(spec, TaskSpec):
        raise WorkflowDefinitionError(
            f"map_task takes a @task (or a functools.partial of one), not {spec!r}."
        )
    if not 0.0 <= min_success_ratio <= 1.0:
        raise WorkflowDefinitionError(
            f"map_task: min_success_ratio must be between 0 and 1, not {min_success_ratio}."
        )
    if concurrency is not None and concurrency < 1:
        raise WorkflowDefinitionError(f"map_task: concurrency must be at least 1, not {concurrency}.")
    return MapTask(task=spec, fixed=fixed, concurrency=concurrency, min_success_ratio=min_success_ratio)
