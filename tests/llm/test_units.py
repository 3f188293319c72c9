"""Pure pieces: usage parsing, the retry predicate and Retry-After, the meter, the actor contextvar."""

from __future__ import annotations

import email.utils
import time

import anyio
import anyio.lowlevel
import httpx2
import pytest

from nimflow._exceptions import NimflowError
from nimflow.llm import current_actor, use_actor
from nimflow.llm.client import build_actor_context
from nimflow.llm.retry import parse_retry_after, should_retry
from nimflow.llm.router import Router
from nimflow.llm.usage import current_usage, meter, parse_usage


def test_parse_usage_reads_the_last_usage_key() -> None:
    body = (
        b'{"choices":[{"message":{"content":"the \\"usage\\": {\\"prompt_tokens\\": 99} trick"}}],'
        b'"usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,'
        b' "prompt_tokens_details": {"cached_tokens": 0}}}'
    )
    assert parse_usage(body) == (12, 7)
    assert parse_usage(b'{"choices": []}') is None
    assert parse_usage(b'data: {"usage": null}\n\ndata: [DONE]\n\n') is None
    sse = (
        b'data: {"usage":null}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    )
    assert parse_usage(sse + b"data: [DONE]\n\n") == (3, 4)


def _response(status: int, **headers: str) -> httpx2.Response:
    return httpx2.Response(status, headers=headers)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert should_retry(_response(status))


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 422])
def test_never_retried_statuses(status: int) -> None:
    assert not should_retry(_response(status))


def test_retry_predicate_on_exceptions_and_hints() -> None:
    assert should_retry(exc=httpx2.ConnectError("refused"))
    assert should_retry(exc=httpx2.ReadTimeout("slow"))
    assert should_retry(exc=httpx2.RemoteProtocolError("dropped"))
    assert not should_retry(exc=ValueError("bug"))
    assert not should_retry(_response(500, **{"x-should-retry": "false"}))
    assert should_retry(_response(400, **{"x-should-retry": "true"}))


def test_retry_after_seconds_ms_and_date() -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after": "2"})) == 2.0
    assert parse_retry_after(httpx2.Headers({"retry-after": "0.5"})) == 0.5
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "250"})) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    after = parse_retry_after(httpx2.Headers({"retry-after": date}))
    assert after is not None and 25 <= after <= 31
    assert parse_retry_after(httpx2.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx2.Headers({})) is None


def test_meter_nests_and_resets() -> None:
    assert current_usage() is None
    with meter() as outer:
        with meter() as inner:
            inner.add(requests=2, prompt_tokens=5)
        assert current_usage() is outer
        assert (outer.requests, outer.prompt_tokens) == (2, 5)
    assert current_usage() is None


def test_current_actor_outside_an_actor_task() -> None:
    with pytest.raises(NimflowError, match="outside an actor task"):
        current_actor()


@pytest.mark.anyio
async def test_use_actor_reaches_worker_threads() -> None:
    ctx = build_actor_context("a", "m", ["http://127.0.0.1:9/v1"])
    with use_actor(ctx):
        assert current_actor() is ctx
        assert await anyio.to_thread.run_sync(current_actor) is ctx
    with pytest.raises(NimflowError):
        current_actor()
    await ctx.client.close()
    ctx.sync_client.close()


def test_router_picks_fewest_in_flight_and_caps() -> None:
    router = Router(["http://a/v1", "http://b/v1", "http://c/v1"], max_in_flight=2)
    got = [router.acquire_sync() for _ in range(6)]
    assert sorted(r.url[-4] for r in got) == ["a", "a", "b", "b", "c", "c"]
    b = next(r for r in got if r.url == "http://b/v1")
    router.release(b)
    assert router.acquire_sync().url == "http://b/v1"  # the only one with a free slot
    with pytest.raises(TimeoutError):
        router.acquire_sync(wait_limit=0.05)


@pytest.mark.anyio
async def test_router_hands_freed_slots_to_waiters_in_order() -> None:
    router = Router(["http://a/v1"], max_in_flight=1)
    first = await router.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        replica = await router.acquire()
        order.append(i)
        await anyio.lowlevel.checkpoint()
        router.release(replica)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(wait, i)
                await anyio.sleep(0.001)  # queue them in a known order
            router.release(first)
    assert order == [0, 1, 2, 3, 4]
    assert router.replicas[0].in_flight == 0


@pytest.mark.anyio
async def test_router_cancelled_waiter_does_not_leak_a_slot() -> None:
    router = Router(["http://a/v1"], max_in_flight=1)
    held = await router.acquire()
    with pytest.raises(TimeoutError):
        await router.acquire(wait_limit=0.01)
    router.release(held)
    assert router.replicas[0].in_flight == 0
    with anyio.fail_after(1):
        router.release(await router.acquire())


def test_public_surface_is_the_documented_helpers() -> None:
    import nimflow.llm

    assert sorted(nimflow.llm.__all__) == [
        "ActorContext",
        "ChatResult",
        "ExtractResult",
        "TokenUsage",
        "batch",
        "chat",
        "chat_many",
        "current_actor",
        "extract",
        "extract_many",
        "response_format_for",
        "use_actor",
    ]
