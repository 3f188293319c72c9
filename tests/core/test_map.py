from __future__ import annotations

import functools
import threading

import anyio
import pytest
from sqlmodel import col, select

import nimflow as nf
from nimflow._store import Store, TaskRun


@nf.task(cache=True, cache_version="1")
def scale(x: int, factor: int) -> int:
    return x * factor


@nf.task
def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x


def test_map_over_a_partial_keeps_input_order() -> None:
    @nf.workflow
    def wf(xs: list[int]) -> list[int]:
        return nf.map_task(functools.partial(scale, factor=3))(x=xs)  # type: ignore[no-any-return]

    assert wf(xs=[5, 1, 4, 2]) == [15, 3, 12, 6]


def test_map_over_the_output_of_a_task_and_several_lists() -> None:
    @nf.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @nf.workflow
    def wf(n: int) -> list[int]:
        xs = numbers(n=n)
        return nf.map_task(scale)(x=xs, factor=xs)  # type: ignore[no-any-return]

    assert wf(n=5) == [0, 1, 4, 9, 16]


def test_concurrency_caps_items_in_flight() -> None:
    lock = threading.Lock()
    in_flight = peak = 0

    @nf.task
    async def slow(x: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        with lock:
            in_flight -= 1
        return x

    @nf.workflow
    def wf(xs: list[int]) -> list[int]:
        return nf.map_task(slow, concurrency=3)(x=xs)  # type: ignore[no-any-return]

    assert wf(xs=list(range(20))) == list(range(20))
    assert peak == 3


def test_failed_items_become_none_when_the_ratio_allows() -> None:
    @nf.workflow
    def wf(xs: list[int]) -> list[int | None]:
        return nf.map_task(fail_on_odd, min_success_ratio=0.5)(x=xs)  # type: ignore[no-any-return]

    result = nf.run(wf, xs=[0, 1, 2, 3])
    assert result.status == "succeeded"
    assert result.outputs == [0, None, 2, None]
    assert [(f.item, f.error) for f in result.failures] == [
        (1, "ValueError: odd input 1"),
        (3, "ValueError: odd input 3"),
    ]
    assert "raise ValueError" in result.failures[0].traceback
    with Store.open() as store, store.session() as session:
        query = select(TaskRun).where(TaskRun.run_id == result.run_id, col(TaskRun.item).is_not(None))
        rows = session.exec(query).all()
    statuses = sorted((r.item, r.status) for r in rows)
    assert statuses == [(0, "succeeded"), (1, "failed"), (2, "succeeded"), (3, "failed")]
    assert all("odd input" in (r.error or "") for r in rows if r.status == "failed")


def test_too_many_failures_fail_the_run_and_name_the_item() -> None:
    @nf.workflow
    def wf(xs: list[int]) -> list[int | None]:
        return nf.map_task(fail_on_odd, min_success_ratio=0.9)(x=xs)  # type: ignore[no-any-return]

    with pytest.raises(nf.RunFailedError, match=r"map_fail_on_odd\[1\]: ValueError: odd input 1") as info:
        nf.run(wf, xs=[0, 1, 2, 4])
    assert info.value.run_id


def test_mapped_lists_of_different_lengths_fail_clearly() -> None:
    @nf.workflow
    def wf(xs: list[int], ys: list[int]) -> list[int]:
        return nf.map_task(scale)(x=xs, factor=ys)  # type: ignore[no-any-return]

    with pytest.raises(nf.RunFailedError, match="the mapped lists differ in length"):
        wf(xs=[1, 2], ys=[1])


def test_map_task_argument_errors() -> None:
    with pytest.raises(nf.WorkflowDefinitionError, match="takes a @task"):
        nf.map_task(print)  # type: ignore[arg-type]
    with pytest.raises(nf.WorkflowDefinitionError, match="min_success_ratio must be between 0 and 1"):
        nf.map_task(scale, min_success_ratio=2)
    with pytest.raises(nf.WorkflowDefinitionError, match="no value for \\['factor'\\]"):
        nf.map_task(scale)(x=[1])
    with pytest.raises(nf.WorkflowDefinitionError, match="keyword arguments only"):
        nf.map_task(functools.partial(scale, 2))  # type: ignore[arg-type]


def test_map_outside_a_workflow_is_a_plain_loop() -> None:
    assert nf.map_task(functools.partial(scale, factor=2))(x=[1, 2, 3]) == [2, 4, 6]


def test_an_empty_map_succeeds() -> None:
    @nf.workflow
    def wf(xs: list[int]) -> list[int]:
        return nf.map_task(functools.partial(scale, factor=2))(x=xs)  # type: ignore[no-any-return]

    assert wf(xs=[]) == []
