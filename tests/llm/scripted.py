"""Scripted answers for the transport tests, served by nimflow.testing's fake server: each
chat request is answered ``echo: <last message>`` (3 completion tokens), unless a test's
script returns its own Reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from nimflow.testing import FakeServer, Reply, Script

MODELS = ("base-model", "my-lora")


def echo(body: Any, delay: float = 0.0) -> Reply:
    item = str(body["messages"][-1]["content"]) if body.get("messages") else ""
    usage = {"prompt_tokens": len(item.split()), "completion_tokens": 3, "total_tokens": 0}
    if body.get("stream"):
        chunks: list[Any] = [
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            for word in ("echo:", item)
        ]
        chunks.append(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [],
                "usage": usage,
            }
        )
        return Reply(events=chunks, delay=delay)
    answer = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"echo: {item}"},
            }
        ],
        "usage": usage,
    }
    return Reply(body=answer, delay=delay)


def with_echo(script: Callable[[Any], Reply | None] | None = None) -> Script:
    """The script's Reply where it gives one with a body; the echo answer (after its delay) otherwise."""

    def run(body: Any) -> Reply:
        reply = script(body) if script is not None else None
        if reply is None:
            return echo(body)
        if reply.body is None and reply.events is None and not reply.drop:
            return echo(body, reply.delay)
        return reply

    return run


def echo_server(**knobs: Any) -> FakeServer:
    """A started fake server serving MODELS and answering by echo (set ``.script = with_echo(...)``)."""
    return FakeServer(model=MODELS[0], adapters=MODELS[1:], script=with_echo(), **knobs).start()


def seen(server: FakeServer) -> list[str]:
    """The last message of each chat request the server received."""
    return [r.prompt for r in server.requests if r.path == "/v1/chat/completions"]


async def seen_at_least(server: FakeServer, n: int) -> list[str]:
    """`seen(server)` once it holds at least `n` requests: the server logs a request just after
    sending its answer, so a client holding the last answer may look before it is logged."""
    await wait_until(lambda: len(seen(server)) >= n)
    return seen(server)


def answered(server: FakeServer) -> list[str]:
    return [r.prompt for r in server.requests if r.path == "/v1/chat/completions" and r.status == 200]


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0, every: float = 0.005) -> None:
    """Poll state owned by another thread (a server's log, a replica's health), bounded in time."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - there is no event to wait on across threads
            await anyio.sleep(every)
