"""@workflow and map_task: the body runs once with promises and yields a Graph. Pure, no I/O.

As in Flyte, a workflow body only wires tasks together: the values do not exist yet while it
runs, so Python logic on them (if, for, f-strings, arithmetic) is an error that says so.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from nimflow._exceptions import WorkflowDefinitionError

if TYPE_CHECKING:
    from nimflow._run import RunResult
    from nimflow._task import TaskSpec

P = ParamSpec("P")
R = TypeVar("R")

_builder: contextvars.ContextVar[GraphBuilder | None] = contextvars.ContextVar(
    "nimflow_builder", default=None
)


def current_builder() -> GraphBuilder | None:
    return _builder.get()


# --------------------------------------------------------------------------------------------------
# Promises


class Promise:
    """A value that will exist when the run reaches it: a workflow input or a node's output."""

    __slots__ = ("builder", "description", "index", "source")

    def __init__(self, builder: GraphBuilder, source: str, index: int | None, description: str) -> None:
        self.builder = builder
        self.source = source  # "input:<name>" or a node id
        self.index = index  # position in a tuple output
        self.description = description

    def __repr__(self) -> str:
        return f"<promise of {self.description}>"

    def _misuse(self, *_: Any, **__: Any) -> typing.NoReturn:
        raise WorkflowDefinitionError(
            f"{self.description} is used as a plain value inside a @workflow body. The body only "
            "wires tasks together; the value exists only when the run reaches it. Pass it to a task, "
            "map_task or workflow, and move the logic (if/for, f-strings, arithmetic, indexing) into a @task."
        )

    __bool__ = __iter__ = __len__ = __contains__ = __getitem__ = __format__ = _misuse
    __add__ = __radd__ = __sub__ = __mul__ = __truediv__ = __lt__ = __gt__ = __le__ = __ge__ = _misuse
    __int__ = __float__ = __index__ = _misuse


# --------------------------------------------------------------------------------------------------
# The graph


@dataclass(eq=False)
class Node:
    id: str
    task: TaskSpec[..., Any]
    inputs: dict[str, Any]  # may hold promises, also nested in lists/dicts/tuples
    label: str
    upstream: tuple[str, ...]
    # map_task only
    mapped: tuple[str, ...] = ()  # inputs that are lists to fan out over
    concurrency: int | None = None
    min_success_ratio: float = 1.0

    @property
    def is_map(self) -> bool:
        return bool(self.mapped)


@dataclass(eq=False)
class Graph:
    workflow: WorkflowSpec[..., Any]
    nodes: list[Node]  # in creation order, which is a topological order
    output: Any  # structure holding promises

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)


class GraphBuilder:
    def __init__(self, workflow: WorkflowSpec[..., Any]) -> None:
        self.workflow = workflow
        self.nodes: list[Node] = []
        self.stack: list[str] = [workflow.name]  # workflows being inlined, to catch recursion

    def _label(self, name: str) -> str:
        return "/".join([*(wf.rsplit(".", 1)[-1] for wf in self.stack[1:]), name])

    def add_task(self, spec: TaskSpec[..., Any], inputs: dict[str, Any]) -> Any:
        node = Node(
            id=f"n{len(self.nodes) + 1}",
            task=spec,
            inputs=inputs,
            label=self._label(spec.name.rsplit(".", 1)[-1]),
            upstream=self._upstream(inputs, f"task {spec.name!r}"),
        )
        self.nodes.append(node)
        arity = spec.output_arity
        what = f"the output of {node.label}"
        if arity is None:
            return Promise(self, node.id, None, what)
        return tuple(Promise(self, node.id, i, f"output {i} of {node.label}") for i in range(arity))

    def add_map(self, mapper: MapTask, inputs: dict[str, Any], mapped: tuple[str, ...]) -> Promise:
        spec = mapper.task
        node = Node(
            id=f"n{len(self.nodes) + 1}",
            task=spec,
            inputs=inputs,
            label=self._label(f"map_{spec.name.rsplit('.', 1)[-1]}"),
            upstream=self._upstream(inputs, f"map_task({spec.name!r})"),
            mapped=mapped,
            concurrency=mapper.concurrency,
            min_success_ratio=mapper.min_success_ratio,
        )
        self.nodes.append(node)
        return Promise(self, node.id, None, f"the output of {node.label}")

    def _upstream(self, value: Any, where: str) -> tuple[str, ...]:
        found: dict[str, None] = {}
        for promise in iter_promises(value):
            if promise.builder is not self:
                raise WorkflowDefinitionError(
                    f"{where} was given {promise.description}, which belongs to another workflow run. "
                    "Pass values between workflows as inputs and outputs."
                )
            if not promise.source.startswith("input:"):
                found[promise.source] = None
        return tuple(found)

    @contextmanager
    def inline(self, name: str) -> Iterator[None]:
        if name in self.stack:
            chain = " -> ".join([*self.stack, name])
            raise WorkflowDefinitionError(f"workflow cycle: {chain}. A workflow cannot call itself.")
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()


def iter_promises(value: Any) -> Iterator[Promise]:
    """Promises inside a value, looking through lists, tuples, sets and dict values."""
    if isinstance(value, Promise):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from iter_promises(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_promises(item)


# --------------------------------------------------------------------------------------------------
# @workflow


class WorkflowSpec(Generic[P, R]):
    """A decorated workflow. Calling it runs it (or, inside another workflow, inlines it)."""

    def __init__(self, fn: Callable[P, R], name: str | None = None) -> None:
        from nimflow._task import default_name

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
        if builder is not None:
            with builder.inline(self.name):
                return self.fn(*args, **kwargs)
        from nimflow._run import run

        bound = self.signature.bind(*args, **kwargs)
        return run(self, inputs=bound.arguments).outputs  # type: ignore[no-any-return]

    def build(self) -> Graph:
        """Run the body once with promises for the inputs and return the graph it wires."""
        builder = GraphBuilder(self)
        inputs = {
            name: Promise(builder, f"input:{name}", None, f"workflow input {name!r}")
            for name in self.signature.parameters
        }
        token = _builder.set(builder)
        try:
            output = self.fn(**inputs)  # type: ignore[arg-type, call-arg]
        except RecursionError as exc:
            raise WorkflowDefinitionError(f"workflow {self.name!r} recurses without end") from exc
        finally:
            _builder.reset(token)
        builder._upstream(output, f"the return value of workflow {self.name!r}")
        return Graph(workflow=self, nodes=builder.nodes, output=output)

    def run(self, **inputs: Any) -> RunResult:
        from nimflow._run import run

        return run(self, inputs=inputs)


def workflow(fn: Callable[P, R]) -> WorkflowSpec[P, R]:
    """Make `fn` a workflow. Its body wires tasks together; it runs once, with promises."""
    return WorkflowSpec(fn)


# --------------------------------------------------------------------------------------------------
# map_task


@dataclass(eq=False)
class MapTask:
    """`map_task(task)(xs=[...])`: one invocation of the task per item, each cached on its own."""

    task: TaskSpec[..., Any]
    fixed: dict[str, Any] = field(default_factory=dict)  # from functools.partial
    concurrency: int | None = None
    min_success_ratio: float = 1.0

    def __call__(self, **mapped_inputs: Any) -> list[Any]:
        if not mapped_inputs:
            raise WorkflowDefinitionError(
                f"map_task({self.task.name!r}) needs the lists to map over as keyword arguments, "
                "e.g. map_task(t)(items=xs)."
            )
        params = self.task.signature.parameters
        unknown = [name for name in [*mapped_inputs, *self.fixed] if name not in params]
        if unknown:
            raise WorkflowDefinitionError(
                f"map_task({self.task.name!r}): {unknown} are not inputs of the task (inputs: {list(params)})."
            )
        both = set(mapped_inputs) & set(self.fixed)
        if both:
            raise WorkflowDefinitionError(
                f"map_task({self.task.name!r}): {sorted(both)} are both mapped and fixed."
            )
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty and n not in mapped_inputs and n not in self.fixed
        ]
        if missing:
            raise WorkflowDefinitionError(
                f"map_task({self.task.name!r}): no value for {missing}; map over them or fix them with functools.partial."
            )
        builder = current_builder()
        if builder is None:  # outside a workflow: a plain loop, like calling a task directly
            lists = {name: list(values) for name, values in mapped_inputs.items()}
            lengths = {len(v) for v in lists.values()}
            if len(lengths) > 1:
                raise WorkflowDefinitionError(
                    f"map_task({self.task.name!r}): mapped lists differ in length: {lengths}"
                )
            count = lengths.pop()
            return [self.task.fn(**self.fixed, **{n: v[i] for n, v in lists.items()}) for i in range(count)]
        inputs = dict(self.fixed)
        inputs.update(mapped_inputs)
        return builder.add_map(self, inputs, tuple(mapped_inputs))  # type: ignore[return-value]


def map_task(
    target: TaskSpec[..., Any] | functools.partial[Any],
    concurrency: int | None = None,
    min_success_ratio: float = 1.0,
) -> MapTask:
    """Fan a task out over lists. `target` is a task or `functools.partial(task, fixed=...)`.

    `concurrency` caps items in flight; with `min_success_ratio` below 1, failed items become
    None and the run lists them with their errors instead of failing.
    """
    from nimflow._task import TaskSpec

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
