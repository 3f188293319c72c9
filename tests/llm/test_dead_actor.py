"""A hung server and a dead actor: bounded time per item, one clear error saying what to do."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

from nimflow._exceptions import EndpointUnreachableError
from nimflow.llm import chat, chat_many
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.router import restarts_in
from nimflow.llm.usage import meter
from nimflow.testing import FakeServerProcess

MODEL = "meta/llama3-8b-instruct"


class SilentServer:
    """Accepts connections and reads requests, never answers (a hung model server)."""

    def __init__(self) -> None:
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        for writer in self._writers:
            writer.close()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> SilentServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.mark.anyio
async def test_a_hung_server_costs_an_item_two_timeouts_and_says_how_to_raise_it() -> None:
    with SilentServer() as silent:
        ctx = build_actor_context("slow-actor", MODEL, [silent.base_url], request_timeout=1)
        with meter() as usage, anyio.fail_after(20), pytest.raises(EndpointUnreachableError) as info:
            await chat("hi", item_id="h1", ctx=ctx)
        message = str(info.value)
        assert message.startswith("item 'h1': ") and "'slow-actor'" in message
        assert "request timeout of 1 s" in message
        assert "request_timeout=SECONDS" in message and "--request-timeout slow-actor=SECONDS" in message
        assert (silent.connections, usage.requests, usage.retries) == (2, 1, 1)

        with anyio.fail_after(20), pytest.raises(openai.APITimeoutError) as raw:
            await ctx.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert str(raw.value).startswith("model call: ") and "request_timeout" in str(raw.value)
        assert silent.connections == 4
        await close_actor_context(ctx)


@pytest.fixture
def server_process() -> Iterator[FakeServerProcess]:
    server = FakeServerProcess(model=MODEL, latency_ms=20).start()
    yield server
    server.stop()


@pytest.mark.anyio
async def test_a_killed_server_fails_the_queued_items_at_once_with_one_clear_error(
    server_process: FakeServerProcess,
) -> None:
    restarts: list[str] = []

    async def restart_fails(url: str) -> Any:
        restarts.append(url)
        raise RuntimeError("the server cannot be started again")

    # The default retry policy: without the circuit breaker each of the 500 items would retry for
    # about 15 s, 8 waves of 64, past the limit below.
    prompts = [f"Item {i} is a sentence." for i in range(500)]

    async def kill_midway() -> None:
        for _ in range(400):  # until some items are answered (at most 20 s)
            if len(await anyio.to_thread.run_sync(lambda: server_process.requests)) >= 50:
                break
            await anyio.sleep(0.05)
        os.kill(server_process.pid, signal.SIGKILL)

    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            ctx = build_actor_context(
                "dead-actor", MODEL, [server_process.base_url], on_replica_down=restarts_in(tg, restart_fails)
            )
            tg.start_soon(kill_midway)
            results = await chat_many(prompts, concurrency=64, max_tokens=8, ctx=ctx)
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(done) + len(failed) == 500 and failed
    assert all(r.error_type == "EndpointUnreachableError" for r in failed)
    down = [r for r in failed if "is down" in (r.error or "")]
    assert len(down) > len(failed) // 2  # most fail on the open breaker, without a request
    message = down[-1].error or ""
    assert f"item {down[-1].id!r}: actor 'dead-actor' is down" in message
    assert server_process.base_url in message and "run the same command again" in message
    assert restarts == [server_process.base_url]
    await close_actor_context(ctx)
