"""Actor tasks inside runs: tokens and retries on the task-run rows, cache keyed by what served it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import col, select

import nimflow as nf
from nimflow._store import Store, TaskRun
from nimflow.actors.overrides import ActorOverride
from nimflow.llm import chat_many
from nimflow.testing import FakeServer

llm = nf.ActorEnvironment(
    name="llm", server=nf.OpenAIEndpoint("http://127.0.0.1:9/v1", model="base"), ttl_seconds=0
)


@llm.task(cache=True, cache_version="1")
async def summarize(batch: list[str], style: str) -> list[str]:
    results = await chat_many([f"Summarize ({style}): {doc}" for doc in batch], max_tokens=64)
    failed = [r.error for r in results if r.error]
    if failed:
        raise RuntimeError(failed[0])
    return [r.text or "" for r in results]


@nf.task
def batches(n: int) -> list[list[str]]:
    docs = [f"Document {i} talks about caching. It is short." for i in range(n)]
    return [docs[i : i + 5] for i in range(0, n, 5)]


@nf.workflow
def wf(n: int = 10, style: str = "brief") -> list[list[str]]:
    return nf.map_task(functools.partial(summarize, style=style))(batch=batches(n=n))


Factory = Callable[..., FakeServer]


def _item_rows(run_id: str) -> list[TaskRun]:
    with Store.open().session() as session:
        query = select(TaskRun).where(TaskRun.run_id == run_id, col(TaskRun.item).is_not(None))
        return list(session.exec(query))


def test_tokens_and_retries_are_recorded_per_item(fake_openai_factory: Factory) -> None:
    fake = fake_openai_factory(model="base", faults="seq:429,ok;retry_after=0.05")
    result = nf.run(wf, n=10, servers={"llm": f"endpoint:{fake.base_url}"})
    assert [len(batch) for batch in result.outputs] == [5, 5]
    assert all(text.startswith("Summarize (brief): Document") for batch in result.outputs for text in batch)
    rows = _item_rows(result.run_id)
    assert sum(r.requests for r in rows) == 10  # the retried request counts once
    assert sum(r.retries for r in rows) == 1
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in rows)
    assert result.tokens == sum(r.prompt_tokens + r.completion_tokens for r in rows)
    assert result.served_by["llm"].startswith(f"endpoint {fake.base_url}")


def test_a_cached_run_needs_no_server_and_a_new_server_recomputes(fake_openai_factory: Factory) -> None:
    first = fake_openai_factory(model="base")
    nf.run(wf, n=5, servers={"llm": f"endpoint:{first.base_url}"})
    first.stop()
    # Fully cached: nothing is asked of the (now stopped) server that served it.
    replay = nf.run(wf, n=5, servers={"llm": f"endpoint:{first.base_url}"})
    assert replay.cached == 1
    # What answers is part of the key, not where it listens: the same model elsewhere is a hit,
    second = fake_openai_factory(model="base")
    moved = nf.run(wf, n=5, servers={"llm": f"endpoint:{second.base_url}"})
    assert moved.cached == 1
    assert [r for r in second.requests if r.path == "/v1/chat/completions"] == []
    # and another model is asked again.
    third = fake_openai_factory(model="other")
    override = ActorOverride(server=f"endpoint:{third.base_url}", model="other")
    other = nf.run(wf, n=5, servers={"llm": override})
    assert other.cached == 0
    assert len([r for r in third.requests if r.path == "/v1/chat/completions"]) == 5


def test_an_unreachable_server_fails_the_node_once_with_its_reason() -> None:
    with pytest.raises(nf.RunFailedError) as info:
        nf.run(wf, n=5)  # nothing listens on port 9
    result: Any = info.value.result  # type: ignore[attr-defined]
    [failure] = result.failures
    assert failure.item is None and failure.expected
    assert "actor 'llm'" in failure.error and "127.0.0.1:9" in failure.error
