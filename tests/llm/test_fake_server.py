"""End to end against nimflow.testing.FakeServer: faults, replicas, streaming, errors, extraction."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import openai
import pydantic
import pytest
from scripted import wait_until

from nimflow._exceptions import AuthenticationError, ContextLengthError, ExtractionError, ModelNotServedError
from nimflow.llm import ActorContext, chat, chat_many, extract
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.retry import RetryPolicy
from nimflow.llm.router import Replica, restarts_in
from nimflow.llm.usage import meter
from nimflow.testing import FakeServer

MODEL = "meta/llama3-8b-instruct"
ADAPTER = "Samhita/OrpoLlama-3-8B-Instruct"
FAST = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.05)
KEY = "nvapi-super-secret-key"


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakeServer]]:
    started: list[FakeServer] = []

    def make(**options: Any) -> FakeServer:
        options.setdefault("model", MODEL)
        options.setdefault("adapters", [ADAPTER])
        server = FakeServer(**options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _ctx(servers: list[FakeServer], **kw: Any) -> ActorContext:
    kw.setdefault("retry_policy", FAST)
    return build_actor_context("nim-actor", MODEL, [s.base_url for s in servers], served_by="fake", **kw)


def _statuses(server: FakeServer) -> list[int | None]:
    return [r.status for r in server.requests if r.path.endswith("/completions")]


def _replica0(ctx: ActorContext) -> Replica:
    assert ctx.router is not None
    return ctx.router.replicas[0]


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["429", "500", "503", "drop"])
async def test_each_retryable_fault_is_retried_and_counted(
    fakes: Callable[..., FakeServer], fault: str
) -> None:
    server = fakes(faults=f"seq:{fault}*2,ok;retry_after=0.2")
    ctx = _ctx([server])
    started = time.monotonic()
    with meter() as usage:
        text = await chat("The sky is blue. Grass is green.", ctx=ctx, item_id="a")
    assert text
    assert (usage.requests, usage.retries, usage.errors) == (1, 2, 0)
    expected = None if fault == "drop" else int(fault)
    assert _statuses(server) == [expected, expected, 200]
    if fault == "429":
        assert time.monotonic() - started >= 0.4  # Retry-After: 0.2 honoured twice
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_a_hang_past_the_timeout_is_retried(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(faults="seq:hang,ok;hang_seconds=2")
    ctx = _ctx([server], request_timeout=0.3)
    with meter() as usage, anyio.fail_after(10):
        assert await chat("Hello there.", ctx=ctx)
    assert usage.retries == 1
    # The hung request is logged only once the server gives up on it; the answered one is there.
    assert [r.status for r in server.requests] == [200]
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_a_malformed_body_is_asked_again(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(faults="seq:malformed,ok")
    ctx = _ctx([server])
    with meter() as usage:
        assert await chat("Hello there.", ctx=ctx)
    assert usage.retries == 1 and len(server.requests) == 2
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_client_errors_are_not_retried(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(api_key=KEY, max_model_len=50)
    ctx = _ctx([server], api_key=KEY)
    wrong = _ctx([server], api_key="nvapi-wrong-key", api_key_name="NGC_API_KEY")
    with meter() as usage:
        with pytest.raises(ContextLengthError) as too_long:
            await chat("word " * 200, ctx=ctx, item_id="doc-long")
        with pytest.raises(ModelNotServedError) as unknown:
            await chat("hi", model="no-such-adapter", ctx=ctx, item_id="doc-404")
        with pytest.raises(AuthenticationError) as denied:
            await chat("hi", ctx=wrong, item_id="doc-401")
    assert _statuses(server) == [400, 404, 401]
    assert usage.retries == 0 and usage.errors == 3
    assert "'doc-long'" in str(too_long.value) and "maximum context length is 50" in str(too_long.value)
    assert "'doc-404'" in str(unknown.value) and ADAPTER in str(unknown.value)
    assert "'doc-401'" in str(denied.value) and "NGC_API_KEY" in str(denied.value)
    for err in (too_long.value, unknown.value, denied.value):
        assert KEY not in str(err) and "nvapi-wrong-key" not in str(err)
    await close_actor_context(ctx)
    await close_actor_context(wrong)


@pytest.mark.anyio
async def test_one_bad_item_leaves_the_batch_alone(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(max_model_len=100)
    ctx = _ctx([server])
    prompts = [f"Item number {i} is here. It has words." for i in range(20)]
    prompts[5] = "long " * 300
    results = await chat_many(prompts, ids=[f"d{i}" for i in range(20)], max_tokens=20, ctx=ctx)
    assert [r.ok for r in results] == [i != 5 for i in range(20)]
    assert results[5].error_type == "ContextLengthError" and "'d5'" in (results[5].error or "")
    assert len(server.requests) == 20
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_lora_adapter_is_chosen_by_model_name(fakes: Callable[..., FakeServer]) -> None:
    server = fakes()
    ctx = _ctx([server])
    results = await chat_many(["One. Two."], model=ADAPTER, ctx=ctx)
    assert results[0].ok
    assert [r.model for r in server.requests] == [ADAPTER]
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_routing_across_two_fake_replicas(fakes: Callable[..., FakeServer]) -> None:
    slow, fast = fakes(latency_ms=80), fakes(latency_ms=2)
    ctx = _ctx([slow, fast], max_in_flight_per_replica=8)
    results = await chat_many([f"Sentence {i}." for i in range(80)], concurrency=4, ctx=ctx)
    assert all(r.ok for r in results)
    assert len(slow.requests) + len(fast.requests) == 80
    assert len(slow.requests) * 4 < len(fast.requests)
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_replica_killed_mid_batch_every_request_answered_exactly_once(
    fakes: Callable[..., FakeServer],
) -> None:
    # uvicorn notices a stop request within 0.1 s: the batch must still be running by then.
    a, b = fakes(latency_ms=25), fakes(latency_ms=25)
    ctx = _ctx([a, b])
    n = 400
    prompts = [f"Request {i} asks something." for i in range(n)]
    done: list[int] = []

    async def stop_a_midway() -> None:
        await wait_until(lambda: len(a.requests) >= 30, limit=20)
        await anyio.to_thread.run_sync(a.stop)
        done.append(1)

    with meter() as usage, anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_a_midway)
            results = await chat_many(prompts, concurrency=16, max_tokens=16, ctx=ctx)
    assert done and all(r.ok for r in results)
    answered = Counter(r.prompt for s in (a, b) for r in s.requests if r.status == 200)
    assert answered == Counter({p: 1 for p in prompts})
    assert all(r.status in (200, None) for s in (a, b) for r in s.requests)
    assert usage.errors == 0 and not _replica0(ctx).up
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_on_replica_down_restart_is_used(fakes: Callable[..., FakeServer]) -> None:
    a, b = fakes(latency_ms=5), fakes(latency_ms=5)
    restarted: list[FakeServer] = []
    calls: list[str] = []

    async def restart(url: str) -> str | None:
        calls.append(url)
        server = await anyio.to_thread.run_sync(lambda: fakes(latency_ms=5))
        restarted.append(server)
        return server.base_url

    async with anyio.create_task_group() as group:  # the restarts are its tasks
        ctx = _ctx([a, b], on_replica_down=restarts_in(group, restart))
        first = await chat_many([f"Before {i}." for i in range(20)], ctx=ctx)
        await anyio.to_thread.run_sync(a.stop)
        second = await chat_many([f"During {i}." for i in range(40)], concurrency=8, ctx=ctx)
        await wait_until(lambda: bool(restarted) and _replica0(ctx).up)
        third = await chat_many([f"After {i}." for i in range(40)], concurrency=8, ctx=ctx)
    assert all(r.ok for r in first + second + third)
    assert calls == [a.base_url]
    assert ctx.replica_urls[0] == restarted[0].base_url
    assert len(restarted[0].requests) > 0
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_streaming_from_the_fake(fakes: Callable[..., FakeServer]) -> None:
    server = fakes()
    ctx = _ctx([server])
    with meter() as usage:
        stream = await ctx.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Cats sleep a lot. Dogs bark."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1].usage
    assert text and final is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (final.prompt_tokens, final.completion_tokens)
    assert server.requests[0].stream
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_token_usage_matches_the_responses(fakes: Callable[..., FakeServer]) -> None:
    server = fakes()
    ctx = _ctx([server])
    with meter() as usage:
        results = await chat_many([f"Text {i} has some words in it." for i in range(10)], ctx=ctx)
    assert usage.prompt_tokens == sum(r.usage.prompt_tokens for r in results if r.usage)
    assert usage.completion_tokens == sum(r.usage.completion_tokens for r in results if r.usage)
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    await close_actor_context(ctx)


class Entities(pydantic.BaseModel):
    persons: list[str]
    organizations: list[str]
    locations: list[str]


TEXT = "Marie Curie worked at the University of Paris in France with Pierre Curie in 1903."


@pytest.mark.anyio
async def test_extract_against_the_fake(fakes: Callable[..., FakeServer]) -> None:
    server = fakes()
    ctx = _ctx([server])
    value = await extract(TEXT, Entities, ctx=ctx, item_id="e1")
    assert isinstance(value, Entities)
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_extract_retries_truncated_output(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(faults="seq:truncate,ok")
    ctx = _ctx([server])
    with meter() as usage:
        value = await extract(TEXT, Entities, ctx=ctx, max_tokens=256, item_id="e2")
    assert isinstance(value, Entities)
    assert [r.body["max_tokens"] for r in server.requests] == [256, 512]
    assert usage.retries == 1
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_extract_gives_up_with_a_clear_error(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(faults="seq:truncate*5")
    ctx = _ctx([server])
    with pytest.raises(ExtractionError, match=r"item 'e3'.*Entities.*cut at max_tokens"):
        await extract(TEXT, Entities, ctx=ctx, max_tokens=64, attempts=3, item_id="e3")
    assert len(server.requests) == 3
    await close_actor_context(ctx)


def test_sync_client_against_the_fake(fakes: Callable[..., FakeServer]) -> None:
    server = fakes(faults="seq:503,ok")
    ctx = _ctx([server])
    with meter() as usage:
        r = ctx.sync_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi. Yo."}]
        )
    assert r.choices[0].message.content
    assert usage.retries == 1 and usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError):
        ctx.sync_client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    anyio.run(close_actor_context, ctx)
