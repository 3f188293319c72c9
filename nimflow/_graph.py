"""The graph a workflow body wires: promises, nodes, and the builder that records them. Pure, no I/O.

It knows tasks only as `NodeTask` (a name and an output arity), so it imports neither the task
module nor anything that runs: `_task` and `_workflow` build on it, the scheduler reads it.
"""

from __future__ import annotations

import contextvars
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from nimflow._exceptions import MapInputError, WorkflowDefinitionError

__all__ = [
    "Graph",
    "GraphBuilder",
    "Node",
    "NodeTask",
    "Promise",
    "building",
    "current_builder",
    "iter_promises",
    "map_items",
]


class NodeTask(Protocol):
    """What the graph needs of a task: its name, and how many outputs it unpacks into."""

    @property
    def name(self) -> str: ...

    @property
    def output_arity(self) -> int | None: ...


T = TypeVar("T", bound=NodeTask)

_builder: contextvars.ContextVar[GraphBuilder[Any] | None] = contextvars.ContextVar(
    "nimflow_builder", default=None
)


def current_builder() -> GraphBuilder[Any] | None:
    """The builder of the workflow body running now; None outside a workflow body."""
    return _builder.get()


@contextmanager
def building(builder: GraphBuilder[Any]) -> Iterator[None]:
    """Make `builder` the current one while a workflow body runs."""
    token = _builder.set(builder)
    try:
        yield
    finally:
        _builder.reset(token)


class Promise:
    """A value that will exist when the run reaches it: a workflow input or a node's output."""

    __slots__ = ("builder", "description", "index", "source")

    def __init__(self, builder: GraphBuilder[Any], source: str, index: int | None, description: str) -> None:
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


@dataclass(eq=False)
class Node(Generic[T]):
    id: str
    task: T
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
class Graph(Generic[T]):
    nodes: list[Node[T]]  # in creation order, which is a topological order
    output: Any  # structure holding promises

    def __iter__(self) -> Iterator[Node[T]]:
        return iter(self.nodes)


class GraphBuilder(Generic[T]):
    """Records the nodes a workflow body creates; `name` is the workflow's, to catch recursion."""

    def __init__(self, name: str) -> None:
        self.nodes: list[Node[T]] = []
        self.stack: list[str] = [name]  # workflows being inlined

    def inputs(self, names: Sequence[str]) -> dict[str, Promise]:
        return {name: Promise(self, f"input:{name}", None, f"workflow input {name!r}") for name in names}

    def graph(self, output: Any) -> Graph[T]:
        self._upstream(output, f"the return value of workflow {self.stack[0]!r}")
        return Graph(nodes=self.nodes, output=output)

    def _label(self, name: str) -> str:
        return "/".join([*(wf.rsplit(".", 1)[-1] for wf in self.stack[1:]), name])

    def add_task(self, task: T, inputs: dict[str, Any]) -> Promise | tuple[Promise, ...]:
        node = Node(
            id=f"n{len(self.nodes) + 1}",
            task=task,
            inputs=inputs,
            label=self._label(task.name.rsplit(".", 1)[-1]),
            upstream=self._upstream(inputs, f"task {task.name!r}"),
        )
        self.nodes.append(node)
        arity = task.output_arity
        if arity is None:
            return Promise(self, node.id, None, f"the output of {node.label}")
        return tuple(Promise(self, node.id, i, f"output {i} of {node.label}") for i in range(arity))

    def add_map(
        self,
        task: T,
        inputs: dict[str, Any],
        mapped: tuple[str, ...],
        concurrency: int | None,
        min_success_ratio: float,
    ) -> Promise:
        node = Node(
            id=f"n{len(self.nodes) + 1}",
            task=task,
            inputs=inputs,
            label=self._label(f"map_{task.name.rsplit('.', 1)[-1]}"),
            upstream=self._upstream(inputs, f"map_task({task.name!r})"),
            mapped=mapped,
            concurrency=concurrency,
            min_success_ratio=min_success_ratio,
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


def map_items(where: str, inputs: Mapping[str, Any], mapped: Sequence[str]) -> list[dict[str, Any]]:
    """The inputs of each item of a map: the mapped lists zipped, the other inputs fixed.

    Used by the scheduler and by map_task's plain loop outside a workflow, so both refuse the same
    inputs with the same error.
    """
    lists: dict[str, Sequence[Any]] = {}
    for name in mapped:
        values = inputs[name]
        if not isinstance(values, list | tuple):
            raise MapInputError(
                f"{where}: map_task input {name!r} must be a list, got {type(values).__name__}."
            )
        lists[name] = values
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise MapInputError(f"{where}: the mapped lists differ in length: {lengths}.")
    count = next(iter(lengths.values()), 0)
    fixed = {k: v for k, v in inputs.items() if k not in lists}
    return [{**fixed, **{n: v[i] for n, v in lists.items()}} for i in range(count)]
