from __future__ import annotations

import threading

import pytest

import nimflow as nf
from nimflow._graph import Graph


@nf.task
def inc(x: int) -> int:
    return x + 1


@nf.task
def split(x: int) -> tuple[int, int]:
    return x // 2, x - x // 2


@nf.task
def add(a: int, b: int) -> int:
    return a + b


@nf.workflow
def halves(x: int = 7) -> tuple[int, int]:
    a, b = split(x=x)
    return inc(x=a), inc(x=b)


@nf.workflow
def outer(x: int) -> int:
    a, b = halves(x=x)  # a workflow inside a workflow is inlined into the same graph
    return add(a=a, b=b)


def test_building_a_graph_runs_no_task() -> None:
    graph = halves.build()
    assert isinstance(graph, Graph)
    assert [n.label for n in graph] == ["split", "inc", "inc"]
    assert graph.nodes[1].upstream == ("n1",) and graph.nodes[2].upstream == ("n1",)


def test_tuple_outputs_unpack_and_calling_a_workflow_runs_it() -> None:
    assert halves(x=9) == (5, 6)
    result = nf.run(halves, x=4)
    assert result.outputs == (3, 3) and result.status == "succeeded" and len(result.run_id) == 12


def test_a_workflow_can_call_another() -> None:
    assert [n.label for n in outer.build()] == ["halves/split", "halves/inc", "halves/inc", "add"]
    assert outer(x=10) == 12


def test_literal_structures_holding_promises_are_resolved() -> None:
    @nf.task
    def total(xs: list[int], extra: dict[str, int]) -> int:
        return sum(xs) + sum(extra.values())

    @nf.workflow
    def wf() -> dict[str, int]:
        a = inc(x=1)
        b = inc(x=2)
        return {"sum": total(xs=[a, b, 10], extra={"b": b}), "a": a}

    assert wf() == {"sum": 2 + 3 + 10 + 3, "a": 2}


@pytest.mark.parametrize(
    "misuse",
    [
        lambda p: bool(p),
        lambda p: f"{p}",
        lambda p: p + 1,
        lambda p: [x for x in p],
        lambda p: p[0],
        lambda p: len(p),
    ],
)
def test_promise_used_as_a_plain_value_is_a_clear_error(misuse: object) -> None:
    @nf.workflow
    def wf(x: int = 1) -> int:
        y = inc(x=x)
        misuse(y)  # type: ignore[operator]
        return y

    with pytest.raises(nf.WorkflowDefinitionError, match="used as a plain value inside a @workflow body"):
        wf.build()


def test_a_workflow_that_calls_itself_is_a_cycle() -> None:
    @nf.workflow
    def loop(x: int) -> int:
        return loop(x=inc(x=x))  # type: ignore[no-any-return]

    with pytest.raises(nf.WorkflowDefinitionError, match=r"workflow cycle: .*loop -> .*loop"):
        loop.build()


def test_a_promise_from_another_workflow_is_refused() -> None:
    leaked: list[object] = []

    @nf.workflow
    def first() -> int:
        y = inc(x=1)
        leaked.append(y)
        return y

    @nf.workflow
    def second() -> int:
        return inc(x=leaked[0])  # type: ignore[arg-type]

    first.build()
    with pytest.raises(nf.WorkflowDefinitionError, match="belongs to another workflow"):
        second.build()


def test_wrong_task_inputs_are_named() -> None:
    @nf.workflow
    def wf() -> int:
        return inc(y=1)  # type: ignore[call-arg]

    with pytest.raises(
        nf.WorkflowDefinitionError, match=r"'test_workflow\.inc' called with the wrong inputs"
    ):
        wf.build()


def test_independent_nodes_run_concurrently() -> None:
    # Each task waits until the other has started: run one after the other, they would time out.
    started = {"a": threading.Event(), "b": threading.Event()}

    @nf.task
    def meet(me: str, other: str) -> str:
        started[me].set()
        if not started[other].wait(timeout=10):
            raise TimeoutError(f"{other} never started while {me} ran")
        return me

    @nf.workflow
    def wf() -> list[str]:
        return [meet(me="a", other="b"), meet(me="b", other="a")]

    assert wf() == ["a", "b"]


def test_independent_async_nodes_run_concurrently() -> None:
    import anyio

    events: dict[str, anyio.Event] = {}

    @nf.task
    async def meet(me: str, other: str) -> str:
        events.setdefault(me, anyio.Event()).set()
        with anyio.fail_after(10):
            await events.setdefault(other, anyio.Event()).wait()
        return me

    @nf.workflow
    def wf() -> tuple[str, str]:
        return meet(me="a", other="b"), meet(me="b", other="a")

    assert wf() == ("a", "b")
