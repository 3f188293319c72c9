"""Routing, caps, failover, retries, streaming and metering, over real HTTP to 127.0.0.1."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import openai
import pytest
from scripted import answered, echo_server, seen, seen_at_least, wait_until, with_echo

from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.context import ActorContext
from nimflow.llm.retry import RetryPolicy
from nimflow.llm.router import Replica, restarts_in
from nimflow.llm.usage import meter
from nimflow.testing import FakeServer, Reply

FAST = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.05)


def _ctx(urls: list[str], **kw: Any) -> ActorContext:
    kw.setdefault("retry_policy", FAST)
    return build_actor_context("test-actor", "base-model", urls, **kw)


async def _ask(ctx: ActorContext, item: str) -> str:
    r = await ctx.client.chat.completions.create(
        model="base-model", messages=[{"role": "user", "content": item}]
    )
    return r.choices[0].message.content or ""


async def _ask_all(ctx: ActorContext, items: list[str], concurrency: int) -> list[str]:
    out: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(item: str) -> None:
        async with limiter:
            out[item] = await _ask(ctx, item)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)
    return [out[i] for i in items]


def _replica0(ctx: ActorContext) -> Replica:
    assert ctx.router is not None
    return ctx.router.replicas[0]


@pytest.mark.anyio
async def test_fewest_in_flight_favours_the_fast_replica(mini: FakeServer, mini2: FakeServer) -> None:
    slow, fast = mini, mini2
    slow.configure(latency_ms=100)
    fast.configure(latency_ms=5)
    ctx = _ctx([slow.base_url, fast.base_url])
    items = [f"i{i}" for i in range(120)]
    assert await _ask_all(ctx, items, concurrency=4) == [f"echo: {i}" for i in items]
    await close_actor_context(ctx)
    assert len(seen(slow)) + len(seen(fast)) == 120
    # The slow replica keeps about two requests in flight; the fast one turns its over 20x faster.
    assert len(seen(slow)) * 4 < len(seen(fast))


@pytest.mark.anyio
async def test_load_spreads_over_three_replicas() -> None:
    servers = [echo_server(latency_ms=20) for _ in range(3)]
    try:
        ctx = _ctx([s.base_url for s in servers])
        await _ask_all(ctx, [f"i{i}" for i in range(90)], concurrency=30)
        await close_actor_context(ctx)
        # The first 30 go out 10/10/10; after that, whichever replica answers first gets the next.
        assert sum(len(seen(s)) for s in servers) == 90 and all(len(seen(s)) >= 10 for s in servers)
    finally:
        for s in servers:
            s.stop()


@pytest.mark.anyio
async def test_per_replica_cap_is_never_exceeded(mini: FakeServer, mini2: FakeServer) -> None:
    mini.configure(latency_ms=30)
    mini2.configure(latency_ms=30)
    ctx = _ctx([mini.base_url, mini2.base_url], max_in_flight_per_replica=3)
    items = [f"i{i}" for i in range(60)]
    assert await _ask_all(ctx, items, concurrency=60) == [f"echo: {i}" for i in items]
    await close_actor_context(ctx)
    assert mini.peak_in_flight == 3 and mini2.peak_in_flight == 3


def test_sync_client_routes_and_caps(mini: FakeServer, mini2: FakeServer) -> None:
    mini.configure(latency_ms=30)
    mini2.configure(latency_ms=30)
    ctx = _ctx([mini.base_url, mini2.base_url], max_in_flight_per_replica=2)

    def ask(i: int) -> str:
        r = ctx.sync_client.chat.completions.create(
            model="base-model", messages=[{"role": "user", "content": f"s{i}"}]
        )
        return r.choices[0].message.content or ""

    async def main() -> list[str]:
        results: list[str] = [""] * 24
        limiter = anyio.CapacityLimiter(12)

        async def one(i: int) -> None:
            results[i] = await anyio.to_thread.run_sync(ask, i, limiter=limiter)

        with meter() as usage, anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(24):
                    tg.start_soon(one, i)
        assert usage.requests == 24 and usage.completion_tokens == 72
        await close_actor_context(ctx)
        return results

    assert anyio.run(main) == [f"echo: s{i}" for i in range(24)]
    assert mini.peak_in_flight <= 2 and mini2.peak_in_flight <= 2
    assert len(seen(mini)) > 0 and len(seen(mini2)) > 0


@pytest.mark.anyio
async def test_refusing_replica_is_taken_out_and_its_requests_answered_elsewhere(
    mini: FakeServer, closed_url: str
) -> None:
    ctx = _ctx([closed_url, mini.base_url])
    items = [f"i{i}" for i in range(40)]
    with meter() as usage:
        assert await _ask_all(ctx, items, concurrency=10) == [f"echo: {i}" for i in items]
    assert sorted(seen(mini)) == sorted(items)
    assert usage.retries == 0 and usage.errors == 0  # a refused connection is a transparent re-send
    down = _replica0(ctx)
    assert not down.up
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_on_replica_down_is_called_once_and_its_url_used(closed_url: str, mini: FakeServer) -> None:
    replacement = echo_server()
    calls: list[str] = []

    async def restart(url: str) -> str | None:
        calls.append(url)
        await anyio.sleep(0.1)
        return replacement.base_url

    try:
        async with anyio.create_task_group() as group:
            ctx = _ctx([closed_url, mini.base_url], on_replica_down=restarts_in(group, restart))
            first = [f"a{i}" for i in range(30)]
            assert await _ask_all(ctx, first, concurrency=10) == [f"echo: {i}" for i in first]
            await wait_until(lambda: _replica0(ctx).up)
        second = [f"b{i}" for i in range(30)]
        assert await _ask_all(ctx, second, concurrency=10) == [f"echo: {i}" for i in second]
        assert calls == [closed_url]
        assert ctx.replica_urls == [replacement.base_url, mini.base_url]
        assert len(seen(replacement)) > 0
        assert sorted(seen(replacement) + seen(mini)) == sorted(first + second)
        await close_actor_context(ctx)
    finally:
        replacement.stop()


@pytest.mark.anyio
async def test_single_replica_restarted_while_requests_wait(closed_url: str) -> None:
    replacement = echo_server()

    async def restart(url: str) -> str | None:
        await anyio.sleep(0.2)
        return replacement.base_url

    try:
        async with anyio.create_task_group() as group:
            ctx = _ctx([closed_url], on_replica_down=restarts_in(group, restart))
            items = [f"i{i}" for i in range(10)]
            with meter() as usage:
                assert await _ask_all(ctx, items, concurrency=10) == [f"echo: {i}" for i in items]
        assert sorted(seen(replacement)) == items
        assert usage.errors == 0
        await close_actor_context(ctx)
    finally:
        replacement.stop()


@pytest.mark.anyio
async def test_replica_stopped_mid_batch_every_request_answered(mini: FakeServer, mini2: FakeServer) -> None:
    mini.configure(latency_ms=10)
    mini2.configure(latency_ms=10)
    ctx = _ctx([mini.base_url, mini2.base_url])
    items = [f"i{i}" for i in range(200)]
    results: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(16)

    async def one(item: str) -> None:
        async with limiter:
            results[item] = await _ask(ctx, item)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)
            await wait_until(lambda: len(results) >= 50)
            await anyio.to_thread.run_sync(mini.stop)
    assert results == {i: f"echo: {i}" for i in items}
    done = answered(mini) + answered(mini2)
    assert set(done) == set(items)
    assert len(answered(mini2)) > len(answered(mini))
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_streaming_through_the_transport(mini: FakeServer) -> None:
    ctx = _ctx([mini.base_url], max_in_flight_per_replica=1)
    with meter() as usage:
        for _ in range(3):  # the slot is released when the stream ends (cap 1 would block otherwise)
            with anyio.fail_after(5):
                stream = await ctx.client.chat.completions.create(
                    model="base-model",
                    messages=[{"role": "user", "content": "hi there"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "echo:hi there"
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (3, 6, 9)
    sync_stream = ctx.sync_client.chat.completions.create(
        model="base-model", messages=[{"role": "user", "content": "sync"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in sync_stream if c.choices) == "echo:sync"
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_usage_meter_counts_tokens(mini: FakeServer) -> None:
    ctx = _ctx([mini.base_url])
    with meter() as usage:
        await _ask_all(ctx, ["one two three", "four"], concurrency=2)
    assert usage.as_dict() == {
        "requests": 2,
        "retries": 0,
        "prompt_tokens": 4,
        "completion_tokens": 6,
        "errors": 0,
    }
    await close_actor_context(ctx)


def _fail_first(n: int, status: int, headers: dict[str, str] | None = None) -> Any:
    left = {"n": n}

    def script(body: dict[str, Any]) -> Any:
        if left["n"] > 0:
            left["n"] -= 1
            return Reply(
                status=status,
                headers=headers or {},
                body={"error": {"message": f"fault {status}", "type": "x", "code": status}},
            )
        return None

    return script


@pytest.mark.anyio
@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
async def test_retryable_statuses_are_retried_and_counted(
    mini: FakeServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    mini.script = with_echo(_fail_first(2, status))
    ctx = _ctx([mini.base_url])
    with meter() as usage, caplog.at_level(logging.DEBUG, logger="nimflow.llm"):
        assert await _ask(ctx, "x") == "echo: x"
    assert len(await seen_at_least(mini, 3)) == 3
    assert (usage.requests, usage.retries, usage.errors) == (1, 2, 0)
    retries = [r for r in caplog.records if r.name == "nimflow.llm" and "retrying" in r.getMessage()]
    assert len(retries) == 2 and f"HTTP {status}" in retries[0].getMessage()
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_429_honours_retry_after(mini: FakeServer) -> None:
    mini.script = with_echo(_fail_first(2, 429, {"Retry-After": "0.3"}))
    ctx = _ctx([mini.base_url])
    started = time.monotonic()
    with meter() as usage:
        assert await _ask(ctx, "x") == "echo: x"
    assert time.monotonic() - started >= 0.55  # two waits of 0.3 s, not the 10-50 ms backoff
    assert usage.retries == 2
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_retries_are_bounded(mini: FakeServer) -> None:
    mini.script = with_echo(_fail_first(100, 503))
    ctx = _ctx([mini.base_url])
    with meter() as usage, pytest.raises(openai.InternalServerError):
        await _ask(ctx, "x")
    assert len(await seen_at_least(mini, FAST.max_attempts)) == FAST.max_attempts
    assert (usage.retries, usage.errors) == (FAST.max_attempts - 1, 1)
    await close_actor_context(ctx)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
    ],
)
async def test_client_errors_are_not_retried(mini: FakeServer, status: int, error: type[Exception]) -> None:
    mini.script = with_echo(_fail_first(100, status))
    ctx = _ctx([mini.base_url])
    with meter() as usage, pytest.raises(error):
        await _ask(ctx, "x")
    assert len(await seen_at_least(mini, 1)) == 1
    assert (usage.retries, usage.errors) == (0, 1)
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_timeouts_and_dropped_connections_are_retried(mini: FakeServer) -> None:
    calls = {"n": 0}

    def script(body: dict[str, Any]) -> Any:
        calls["n"] += 1
        return {1: Reply(delay=2.0), 2: Reply(drop=True)}.get(calls["n"])

    mini.script = with_echo(script)
    ctx = _ctx([mini.base_url], request_timeout=0.3)
    with meter() as usage:
        assert await _ask(ctx, "x") == "echo: x"
    assert calls["n"] == 3 and usage.retries == 2
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_all_replicas_refusing_fails_after_bounded_retries(closed_url: str) -> None:
    ctx = _ctx([closed_url])
    with meter() as usage, pytest.raises(openai.APIConnectionError):
        await _ask(ctx, "x")
    assert usage.retries == FAST.max_attempts - 1
    await close_actor_context(ctx)


@pytest.mark.anyio
async def test_requests_carry_auth_but_not_the_logical_host(mini: FakeServer) -> None:
    ctx = _ctx([mini.base_url], api_key="sk-secret-123")
    await _ask(ctx, "x")
    headers = mini.requests[0].headers
    assert headers["authorization"] == "Bearer sk-secret-123"
    assert headers["host"] == f"127.0.0.1:{mini.port}"
    await close_actor_context(ctx)
