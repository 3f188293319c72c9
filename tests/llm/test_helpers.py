"""chat_many, extract and the error messages, against the fake server's scripted answers."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pydantic
import pytest
from scripted import seen_at_least, with_echo

from nimflow._exceptions import (
    AuthenticationError,
    ContextLengthError,
    EndpointUnreachableError,
    ExtractionError,
    LLMError,
    ModelNotServedError,
)
from nimflow.llm import ActorContext, chat, chat_many, extract, extract_many, use_actor
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.retry import RetryPolicy
from nimflow.llm.usage import meter
from nimflow.testing import FakeServer, Reply

FAST = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)
KEY = "sk-very-secret-key-42"


def _ctx(urls: list[str], **kw: Any) -> ActorContext:
    kw.setdefault("retry_policy", FAST)
    return build_actor_context("nim-actor", "base-model", urls, **kw)


def _error(status: int, message: str, code: str | None = None) -> Reply:
    return Reply(
        status=status, body={"error": {"message": message, "type": "invalid_request_error", "code": code}}
    )


def _completion(content: str, finish_reason: str = "stop") -> Reply:
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "base-model",
        "choices": [
            {"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content}}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
    return Reply(body=body)


@pytest.mark.anyio
async def test_chat_many_keeps_order_and_per_item_errors(mini: FakeServer) -> None:
    def script(body: dict[str, Any]) -> Any:
        if "LONG" in body["messages"][-1]["content"]:
            return _error(
                400, "This model's maximum context length is 2000 tokens. However, you requested 5000."
            )
        return Reply(
            delay=0.001 * (hash(body["messages"][-1]["content"]) % 10)
        )  # answers finish out of order

    mini.script = with_echo(script)
    ctx = _ctx([mini.base_url])
    prompts: list[Any] = [f"p{i}" for i in range(30)]
    prompts[7] = "a LONG one"
    prompts[3] = [{"role": "user", "content": "as messages"}]
    ids = [f"doc-{i}" for i in range(30)]
    with use_actor(ctx), meter() as usage:
        results = await chat_many(prompts, system="be brief", ids=ids, concurrency=8)
    assert [r.id for r in results] == ids
    assert results[0].text == "echo: p0" and results[0].finish_reason == "stop"
    assert results[3].text == "echo: as messages"
    assert results[0].usage is not None and results[0].usage.completion_tokens == 3
    bad = results[7]
    assert bad.text is None and bad.error_type == "ContextLengthError" and not bad.ok
    assert bad.error is not None and "'doc-7'" in bad.error and "maximum context length is 2000" in bad.error
    assert "Shorten" in bad.error
    assert all(r.ok for i, r in enumerate(results) if i != 7)
    assert usage.requests == 30 and usage.errors == 1
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_unreachable_endpoint_names_the_url(closed_url: str) -> None:
    ctx = _ctx([closed_url], api_key=KEY)
    results = await chat_many(["a", "b"], ids=["x1", "x2"], ctx=ctx)
    for r in results:
        assert r.error_type == "EndpointUnreachableError"
        assert r.error is not None and closed_url in r.error and "nimflow actors ls" in r.error
        assert KEY not in r.error
    with pytest.raises(EndpointUnreachableError, match="item 'solo'"):
        await chat("hi", item_id="solo", ctx=ctx)
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_wrong_api_key_names_the_secret_not_the_key(mini: FakeServer) -> None:
    mini.script = with_echo(lambda body: _error(401, f"Incorrect API key provided: {KEY}", "invalid_api_key"))
    ctx = _ctx([mini.base_url], api_key=KEY, api_key_name="NGC_API_KEY")
    with pytest.raises(AuthenticationError) as info:
        await chat("hi", item_id="doc-1", ctx=ctx)
    message = str(info.value)
    assert "'doc-1'" in message and "NGC_API_KEY" in message and KEY not in message
    assert len(await seen_at_least(mini, 1)) == 1
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_unknown_model_lists_what_the_server_offers(mini: FakeServer) -> None:
    mini.script = with_echo(
        lambda body: _error(404, f"The model `{body['model']}` does not exist.", "model_not_found")
    )
    ctx = _ctx([mini.base_url])
    with pytest.raises(ModelNotServedError) as info:
        await chat("hi", model="no-such-lora", item_id="doc-2", ctx=ctx)
    message = str(info.value)
    assert "'doc-2'" in message and "'no-such-lora'" in message
    assert "base-model, my-lora" in message and "model=" in message
    await close_actor_context(ctx)


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.mark.anyio
async def test_extract_validates_and_sends_a_strict_json_schema(mini: FakeServer) -> None:
    sent: list[dict[str, Any]] = []

    def script(body: dict[str, Any]) -> Any:
        sent.append(body)
        return _completion(json.dumps({"name": "Ada", "age": 36}))

    mini.script = with_echo(script)
    ctx = _ctx([mini.base_url])
    person = await extract("Ada is 36.", Person, item_id="p1", ctx=ctx)
    assert person == Person(name="Ada", age=36)
    fmt = sent[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_extract_retries_truncated_output_with_more_tokens(mini: FakeServer) -> None:
    budgets: list[int] = []

    def script(body: dict[str, Any]) -> Any:
        budgets.append(body["max_tokens"])
        if len(budgets) == 1:
            return _completion('{"name": "Ad', finish_reason="length")
        return _completion('{"name": "Ada", "age": 36}')

    mini.script = with_echo(script)
    ctx = _ctx([mini.base_url])
    with meter() as usage:
        person = await extract("Ada is 36.", Person, max_tokens=100, item_id="p1", ctx=ctx)
    assert person.name == "Ada"
    assert budgets == [100, 200]
    assert usage.retries == 1
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_extract_fails_clearly_and_never_returns_invalid_output(mini: FakeServer) -> None:
    budgets: list[int] = []

    def script(body: dict[str, Any]) -> Any:
        budgets.append(body["max_tokens"])
        return _completion('{"name": "Ada", "age": "unknown"}')

    mini.script = with_echo(script)
    ctx = _ctx([mini.base_url])
    with pytest.raises(ExtractionError) as info:
        await extract("Ada.", Person, max_tokens=100, max_tokens_limit=300, attempts=3, item_id="p9", ctx=ctx)
    message = str(info.value)
    assert "'p9'" in message and "Person" in message and "age" in message and "max_tokens" in message
    assert budgets == [100, 200, 300]
    assert isinstance(info.value, LLMError)
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_extract_many_keeps_failures_per_item(mini: FakeServer) -> None:
    def script(body: dict[str, Any]) -> Any:
        text = body["messages"][-1]["content"]
        if text == "bad":
            return _completion("not json at all")
        return _completion(json.dumps({"name": text, "age": 1}))

    mini.script = with_echo(script)
    ctx = _ctx([mini.base_url])
    with anyio.fail_after(10):
        results = await extract_many(["a", "bad", "c"], Person, ids=["i1", "i2", "i3"], ctx=ctx)
    assert [r.value.name if r.value else None for r in results] == ["a", None, "c"]
    assert results[1].error_type == "ExtractionError" and "'i2'" in (results[1].error or "")
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_context_length_error_is_typed(mini: FakeServer) -> None:
    mini.script = with_echo(lambda body: _error(400, "Input too long: 9000 tokens > max_model_len 8192"))
    ctx = _ctx([mini.base_url])
    with pytest.raises(ContextLengthError, match=r"item 'big'.*9000 tokens"):
        await chat("x", item_id="big", ctx=ctx)
    await close_actor_context(ctx)
