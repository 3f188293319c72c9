from __future__ import annotations

import dataclasses
import functools
import logging
from collections import Counter

import pytest
from pydantic import BaseModel

import nimflow as nf
from nimflow._cache import cache_key

calls: Counter[str] = Counter()


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Paper(BaseModel):
    title: str
    pages: int


@nf.task(cache=True, cache_version="1")
def make_points(n: int) -> list[Point]:
    calls["make_points"] += 1
    return [Point(i, i * i) for i in range(n)]


@nf.task(cache=True, cache_version="1", cache_ignore=["verbose"])
def describe(p: Point, verbose: bool = False) -> tuple[str, Paper]:
    calls["describe"] += 1
    return f"{p.x},{p.y}", Paper(title=f"p{p.x}", pages=p.y)


@nf.workflow
def wf(n: int, verbose: bool = False) -> list[tuple[str, Paper]]:
    points = make_points(n=n)
    return nf.map_task(functools.partial(describe, verbose=verbose))(p=points)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


def test_second_run_executes_no_cached_task_and_rebuilds_typed_values() -> None:
    first = nf.run(wf, n=4)
    assert calls == {"make_points": 1, "describe": 4}
    second = nf.run(wf, n=4)
    assert calls == {"make_points": 1, "describe": 4}  # nothing ran again
    assert second.cached == 5
    assert second.outputs == first.outputs
    label, paper = second.outputs[3]
    assert label == "3,9" and isinstance(paper, Paper) and paper.pages == 9


def test_cache_ignore_inputs_do_not_change_the_key() -> None:
    nf.run(wf, n=2, verbose=False)
    nf.run(wf, n=2, verbose=True)
    assert calls["describe"] == 2


def test_new_items_only_are_computed() -> None:
    nf.run(wf, n=3)
    nf.run(wf, n=5)
    assert calls == {"make_points": 2, "describe": 5}


def test_no_cache_recomputes_everything() -> None:
    nf.run(wf, n=2)
    nf.run(wf, n=2, use_cache=False)
    assert calls == {"make_points": 2, "describe": 4}


def test_cache_key_depends_on_name_version_inputs_and_server() -> None:
    base = cache_key("t", "1", {"a": 1, "b": [1, 2]})
    assert base == cache_key("t", "1", {"b": [1, 2], "a": 1})  # canonical: key order does not matter
    assert base != cache_key("t", "2", {"a": 1, "b": [1, 2]})
    assert base != cache_key("u", "1", {"a": 1, "b": [1, 2]})
    assert base != cache_key("t", "1", {"a": 2, "b": [1, 2]})
    assert base != cache_key("t", "1", {"a": 1, "b": [1, 2]}, served_by="fake:llama")


def test_changed_source_under_the_same_version_warns(caplog: pytest.LogCaptureFixture) -> None:
    @nf.task(cache=True, cache_version="7", name="shared")
    def v1(x: int) -> int:
        return x + 1

    @nf.task(cache=True, cache_version="7", name="shared")
    def v2(x: int) -> int:
        return x + 100

    @nf.workflow
    def w1(x: int) -> int:
        return v1(x=x)  # type: ignore[no-any-return]

    @nf.workflow
    def w2(x: int) -> int:
        return v2(x=x)  # type: ignore[no-any-return]

    assert w1(x=1) == 2
    with caplog.at_level(logging.WARNING, logger="nimflow"):
        assert w2(x=1) == 2  # the cached result is reused...
    assert "source changed" in caplog.text and "Bump cache_version" in caplog.text  # ...and it says so


def test_an_unserializable_input_is_a_clear_error() -> None:
    @nf.task(cache=True)
    def takes(x: object) -> int:
        return 1

    @nf.workflow
    def w() -> int:
        return takes(x=object())  # type: ignore[no-any-return]

    with pytest.raises(nf.RunFailedError, match="cannot turn a value of type object into JSON"):
        w()


def test_output_that_does_not_match_its_hint_is_never_cached() -> None:
    @nf.task(cache=True, name="liar")
    def liar(x: int) -> int:
        calls["liar"] += 1
        return "not an int"  # type: ignore[return-value]

    @nf.workflow
    def w(x: int) -> int:
        return liar(x=x)  # type: ignore[no-any-return]

    for _ in range(2):
        with pytest.raises(nf.RunFailedError, match="does not match the return hint int and is not cached"):
            w(x=1)
    assert calls["liar"] == 2
