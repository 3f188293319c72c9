"""A tiny OpenAI-shaped server on 127.0.0.1 for transport tests (in-flight tracking, scripted statuses)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

# A script sees each chat request's JSON body and may return (status, headers, json body) to send
# instead of the normal answer, a float to wait that long first, or "drop" to close the connection.
Script = Callable[[dict[str, Any]], "tuple[int, dict[str, str], Any] | float | str | None"]


@dataclass
class MiniServer:
    latency: float = 0.0
    script: Script | None = None  # may return (status, headers, json body) to override the answer
    port: int = 0
    seen: list[str] = field(default_factory=list)  # ids (last message content) of requests received
    answered: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    headers_seen: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        item = str(body["messages"][-1]["content"]) if body.get("messages") else ""
        with self._lock:
            self.seen.append(item)
            self.headers_seen.append(dict(request.headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            override = self.script(body) if self.script else None
            if isinstance(override, float | int):
                await asyncio.sleep(override)
                override = None
            if override == "drop":
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
            if isinstance(override, tuple):
                status, headers, payload = override
                return web.json_response(payload, status=status, headers=headers)
            usage = {"prompt_tokens": len(item.split()), "completion_tokens": 3, "total_tokens": 0}
            if body.get("stream"):
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                for word in ("echo:", item):
                    chunk = {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                    }
                    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                last = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [],
                    "usage": usage,
                }
                await resp.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
                await resp.write_eof()
                with self._lock:
                    self.answered.append(item)
                return resp
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
            with self._lock:
                self.answered.append(item)
            return web.json_response(answer)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "me"} for m in ("base-model", "my-lora")
        ]
        return web.json_response({"object": "list", "data": data})

    def start(self) -> MiniServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "mini server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0, every: float = 0.005) -> None:
    """Poll state owned by another thread (a server's log, a replica's health), bounded in time."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - there is no event to wait on across threads
            await anyio.sleep(every)
