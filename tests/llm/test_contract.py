"""One contract for every model-call path: a 200 that is not the expected JSON is retried a bounded
number of times, then one clear per-item error naming the actor and the URL; connection failures on
the raw clients carry the same explained message as chat_many's. Real HTTP to 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import openai
import pydantic
import pytest

from nimflow._exceptions import EndpointUnreachableError, MalformedResponseError
from nimflow.llm import ActorContext, chat, chat_many, extract, extract_many
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.retry import RetryPolicy
from nimflow.llm.usage import meter
from nimflow.testing import FakeServer

MODEL = "meta/llama3-8b-instruct"
FAST = RetryPolicy(max_attempts=6, backoff_initial=0.01, backoff_max=0.02)
MESSAGES: Any = [{"role": "user", "content": "Hello there. How are you."}]


class Entities(pydantic.BaseModel):
    persons: list[str]


def _ctx(urls: list[str], **kw: Any) -> ActorContext:
    kw.setdefault("retry_policy", FAST)
    return build_actor_context("ner-actor", MODEL, urls, **kw)


@pytest.fixture
def malformed_fake() -> Iterator[FakeServer]:
    server = FakeServer(model=MODEL, faults="malformed:1.0").start()
    yield server
    server.stop()


def _completions(server: FakeServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/completions"))


def _assert_clear(message: str, who: str, url: str) -> None:
    assert message.startswith(f"{who}: ") and "'ner-actor'" in message and "malformed" in message
    assert url.removesuffix("/v1") in message


@pytest.mark.anyio
async def test_malformed_json_every_path_gives_one_bounded_clear_error(malformed_fake: FakeServer) -> None:
    ctx = _ctx([malformed_fake.base_url])
    url = malformed_fake.base_url
    with meter() as usage, anyio.fail_after(30):
        results = await chat_many(["a. b.", "c. d."], ids=["x1", "x2"], ctx=ctx)
    for r in results:
        assert r.error_type == "MalformedResponseError" and r.error is not None
        _assert_clear(r.error, f"item {r.id!r}", url)
    assert _completions(malformed_fake) == 2 * FAST.malformed_attempts
    assert (usage.requests, usage.retries, usage.errors) == (2, 2 * (FAST.malformed_attempts - 1), 2)

    with pytest.raises(MalformedResponseError) as solo:
        await extract("Ada met Bob.", Entities, item_id="e1", ctx=ctx)
    _assert_clear(str(solo.value), "item 'e1'", url)
    many = await extract_many(["Ada.", "Bob."], Entities, ids=["e2", "e3"], ctx=ctx)
    assert [r.error_type for r in many] == ["MalformedResponseError"] * 2

    with pytest.raises(MalformedResponseError) as raw:
        await ctx.client.chat.completions.create(model=MODEL, messages=MESSAGES)
    _assert_clear(str(raw.value), "model call", url)
    with pytest.raises(MalformedResponseError) as raw_sync:
        await anyio.to_thread.run_sync(
            lambda: ctx.sync_client.chat.completions.create(model=MODEL, messages=MESSAGES)
        )
    _assert_clear(str(raw_sync.value), "model call", url)
    assert _completions(malformed_fake) == 7 * FAST.malformed_attempts
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_an_html_page_with_200_is_a_malformed_response_not_a_string() -> None:
    with FakeServer(model=MODEL, faults="html:1.0") as html:
        ctx = _ctx([html.base_url])
        with anyio.fail_after(30):
            results = await chat_many(["hi"], ids=["h1"], ctx=ctx)
            assert results[0].error_type == "MalformedResponseError"
            _assert_clear(results[0].error or "", "item 'h1'", html.base_url)
            assert "502 Bad Gateway" in (results[0].error or "")
            with pytest.raises(MalformedResponseError):
                await extract("Ada.", Entities, item_id="h2", ctx=ctx)
            with pytest.raises(MalformedResponseError):
                await ctx.client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert _completions(html) == 3 * FAST.malformed_attempts
        await close_actor_context(ctx)


@pytest.mark.anyio
async def test_raw_clients_retry_a_malformed_body_and_succeed() -> None:
    server = FakeServer(model=MODEL, faults="seq:malformed,ok,malformed,ok").start()
    try:
        ctx = _ctx([server.base_url])
        with meter() as usage:
            reply = await ctx.client.chat.completions.create(model=MODEL, messages=MESSAGES)
            sync_reply = await anyio.to_thread.run_sync(
                lambda: ctx.sync_client.chat.completions.create(model=MODEL, messages=MESSAGES)
            )
        assert reply.choices[0].message.content and sync_reply.choices[0].message.content
        assert (usage.requests, usage.retries, usage.errors) == (2, 2, 0)
        assert usage.completion_tokens > 0
        await close_actor_context(ctx)
    finally:
        server.stop()


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.anyio
async def test_raw_client_connection_failure_is_explained_like_chat_many(closed_url: str) -> None:
    ctx = _ctx([closed_url], retry_policy=RetryPolicy(max_attempts=2, backoff_initial=0.01))
    [result] = await chat_many(["hi"], ids=["c1"], ctx=ctx)
    assert result.error_type == "EndpointUnreachableError" and result.error is not None
    calls: list[Callable[[], Any]] = [
        lambda: ctx.sync_client.chat.completions.create(model=MODEL, messages=MESSAGES),
    ]
    with pytest.raises(openai.APIConnectionError) as raw:
        await ctx.client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.APIConnectionError) as raw_sync:
        await anyio.to_thread.run_sync(calls[0])
    for err in (raw.value, raw_sync.value):
        assert str(err) == result.error.replace("item 'c1'", "model call", 1)
        assert "'ner-actor'" in str(err) and closed_url in str(err) and "nimflow actors ls" in str(err)
        assert isinstance(err.__cause__, EndpointUnreachableError)
    with pytest.raises(EndpointUnreachableError, match=r"^item 'solo': cannot reach"):
        await chat("hi", item_id="solo", ctx=ctx)
    await close_actor_context(ctx)
