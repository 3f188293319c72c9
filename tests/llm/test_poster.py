"""The helpers' direct posts (nimflow.llm.poster): the request the SDK would send, its errors, no
openai import while calls succeed, and the SDK's own path for a context built by hand. Over real HTTP to the fake server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import openai
import pytest
from scripted import MODELS, with_echo

from nimflow import ModelCallError
from nimflow.llm import chat, chat_many
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.context import ActorContext, OpenAIClients
from nimflow.llm.retry import RetryPolicy
from nimflow.testing import FakeServer, Reply

FAST = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)


def _ctx(server: FakeServer, **kw: Any) -> ActorContext:
    kw.setdefault("retry_policy", FAST)
    return build_actor_context("test-actor", "base-model", [server.base_url], **kw)


@pytest.mark.anyio
async def test_a_helper_sends_the_url_body_and_auth_the_sdk_would(mini: FakeServer) -> None:
    ctx = _ctx(mini, api_key="sk-secret-123")
    assert ctx.poster is not None
    assert await chat("x", ctx=ctx) == "echo: x"
    assert not ctx.clients.built  # the openai clients are built only when asked for
    await ctx.client.chat.completions.create(
        model="base-model", messages=[{"role": "user", "content": "x"}], max_tokens=512, temperature=0.0
    )
    direct, through_sdk = mini.requests
    assert (direct.method, direct.path, direct.query) == (through_sdk.method, through_sdk.path, "")
    assert direct.body == through_sdk.body
    for name in ("authorization", "content-type", "accept", "content-length", "host"):
        assert direct.headers[name] == through_sdk.headers[name], name
    assert direct.headers["authorization"] == "Bearer sk-secret-123"
    await close_actor_context(ctx)


def test_a_run_of_chat_calls_that_succeed_never_imports_openai(mini: FakeServer) -> None:
    # A fresh interpreter: this one has openai loaded by the other tests.
    script = f"""
import sys, anyio
from nimflow.llm import chat_many
from nimflow.llm.client import build_actor_context, close_actor_context

async def main():
    ctx = build_actor_context("a", "base-model", ["{mini.base_url}"])
    results = await chat_many(["one", "two"], ctx=ctx)
    await close_actor_context(ctx)
    print([r.text for r in results], "openai" in sys.modules)

anyio.run(main)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['echo: one', 'echo: two'] False", out.stderr[-2000:]


@pytest.mark.anyio
async def test_extra_headers_query_body_and_a_timeout_reach_the_request(mini: FakeServer) -> None:
    ctx = _ctx(mini)
    answer = await chat(
        "x",
        ctx=ctx,
        extra_headers={"X-Trace": "t-1", "X-Stainless-Lang": openai.Omit()},
        extra_query={"tenant": "a b"},
        extra_body={"top_k": 5},
        seed=7,
    )
    assert answer == "echo: x"
    (request,) = mini.requests
    assert request.headers["x-trace"] == "t-1" and "x-stainless-lang" not in request.headers
    assert request.query == "tenant=a+b"
    assert request.body["top_k"] == 5 and request.body["seed"] == 7

    mini.script = with_echo(lambda body: Reply(delay=3.0))
    started = time.monotonic()
    with pytest.raises(ModelCallError, match="did not answer"):
        await chat("slow", ctx=ctx, timeout=0.2)
    assert time.monotonic() - started < 2.5  # two tries of 0.2 s, not the default 600 s
    await close_actor_context(ctx)


def _not_served(body: Any) -> Reply | None:
    if body["model"] in MODELS:
        return None
    message = f"The model `{body['model']}` does not exist."
    return Reply(status=404, body={"error": {"message": message, "code": "model_not_found"}})


@pytest.mark.anyio
async def test_status_errors_are_the_sdks_and_say_what_to_do(mini: FakeServer) -> None:
    ctx = _ctx(mini)
    mini.script = with_echo(_not_served)
    results = await chat_many(["fine", "wrong model"], ctx=ctx, model="no-such-model", ids=["a", "b"])
    assert [r.error_type for r in results] == ["ModelNotServedError", "ModelNotServedError"]
    assert "'b'" in (results[1].error or "") and "my-lora" in (results[1].error or "")  # what is offered
    mini.script = with_echo(
        lambda body: Reply(status=400, body={"error": {"message": "maximum context length is 8 tokens"}})
    )
    (too_long,) = await chat_many(["a long prompt"], ctx=ctx)
    assert too_long.error_type == "ContextLengthError" and too_long.id == "0"
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_a_context_built_by_hand_posts_through_the_sdk(mini: FakeServer) -> None:
    client = openai.AsyncOpenAI(base_url=mini.base_url, api_key="sk-hand", max_retries=0)
    sync_client = openai.OpenAI(base_url=mini.base_url, api_key="sk-hand", max_retries=0)
    clients = OpenAIClients.of(client, sync_client)
    ctx = ActorContext("hand", "base-model", mini.base_url, clients, served_by="test")
    assert ctx.poster is None
    (ok,) = await chat_many(["x"], ctx=ctx)
    assert ok.text == "echo: x" and ok.usage is not None and ok.usage.completion_tokens == 3
    assert mini.requests[0].headers["x-stainless-retry-count"] == "0"  # the SDK's own request
    mini.script = with_echo(_not_served)
    (missing,) = await chat_many(["x"], ctx=ctx, model="no-such-model")
    assert missing.error_type == "ModelNotServedError" and "my-lora" in (missing.error or "")
    await client.close()
    sync_client.close()
