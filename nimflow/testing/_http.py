"""ASGI plumbing of the fake server: message types, reading a body, answering, dropping a
connection, and the scripted Reply a test may send instead of the fake's own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
MARK = (b"x-nimflow-fake", b"1")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), MARK]


@dataclass(frozen=True)
class Reply:
    """A scripted answer to one inference request (see ``FakeServer(script=...)``).

    ``body`` (JSON) or ``events`` (server-sent event data, each a JSON value, then ``[DONE]``)
    is sent with ``status`` and ``headers`` after ``delay`` seconds (plus the server's
    ``latency_ms``); with neither, the fake's
    own answer follows the delay. ``drop`` closes the connection without a response.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    events: Sequence[Any] | None = None


# Called on the server's loop with each inference request's JSON body; None: answer normally.
Script = Callable[[Any], "Reply | None"]


class Disconnected(Exception):
    """The client went away before its request body arrived."""


class Stopping(Exception):
    """The server began shutting down; the request is dropped as a dying server would."""


def resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [MARK, (b"content-length", str(len(body)).encode())]
    if headers is None or not any(name == b"content-type" for name, _ in headers):
        head.append(JSON_TYPE)
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def drop(send: Send) -> None:
    """Close the connection without a response.

    ASGI has no message for this, so we close uvicorn's transport (reachable from its
    request cycle, the owner of ``send``), then yield until uvicorn has seen the connection
    go, so that it does not answer 500 on our behalf.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("drop fault: this ASGI server does not expose its transport")
    transport.close()
    for _ in range(20):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)
