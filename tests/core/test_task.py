from __future__ import annotations

import asyncio
from typing import Any

import pytest

import nimflow as nf


@nf.task(cache=True, cache_version="1", retries=2, timeout=5)
def add(a: int, b: int = 1) -> int:
    return a + b


@nf.task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_task_outside_a_workflow_is_the_plain_function() -> None:
    assert add(2) == 3
    assert add(2, b=5) == 7
    assert asyncio.run(double(4)) == 8


def test_task_records_its_settings_and_hints() -> None:
    assert add.name == "test_task.add"
    assert (add.cache, add.cache_version, add.retries, add.timeout) == (True, "1", 2, 5)
    assert add.input_hints == {"a": int, "b": int}
    assert add.return_hint is int
    assert not add.is_async and double.is_async
    assert add.__doc__ is None and add.__wrapped__.__name__ == "add"  # type: ignore[attr-defined]


def test_cache_ignore_must_name_inputs() -> None:
    with pytest.raises(nf.WorkflowDefinitionError, match=r"cache_ignore names \['nope'\]"):

        @nf.task(cache=True, cache_ignore=["nope"])
        def f(x: int) -> int:
            return x


def test_varargs_are_refused_with_advice() -> None:
    with pytest.raises(nf.WorkflowDefinitionError, match="give every input a name"):

        @nf.task
        def f(*xs: Any) -> int:
            return 0


def test_negative_retries_are_refused() -> None:
    with pytest.raises(nf.WorkflowDefinitionError, match="retries must be 0 or more"):
        nf.task(retries=-1)(lambda: 0)


def test_custom_name_and_tuple_arity() -> None:
    @nf.task(name="stats")
    def stats(xs: list[int]) -> tuple[int, float]:
        return len(xs), sum(xs) / len(xs)

    assert stats.name == "stats"
    assert stats.output_arity == 2
    assert add.output_arity is None
