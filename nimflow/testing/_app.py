"""The fake server's ASGI application.

A raw ASGI callable with a dict of routes rather than a framework router: per request it costs
a dict lookup, one ``json.loads`` and one ``json.dumps``, which keeps the server far from being
the bottleneck of any benchmark (see ``nimflow.testing`` for the measured figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import _openai as oa
from ._answers import chat_prompt, pieces
from ._control import ControlRoutes
from ._faults import FaultInjector, FaultKind, FaultPlan
from ._http import (
    MARK,
    SSE_HEADERS,
    Disconnected,
    Receive,
    Reply,
    Scope,
    Script,
    Send,
    Stopping,
    drop,
    read_body,
    resolve,
    respond,
)
from ._log import Metrics, RequestLog, RequestRecord
from ._options import FakeOptions

_IMMEDIATE = {
    FaultKind.RATE_LIMIT: (429, oa.RATE_LIMITED),
    FaultKind.SERVER_ERROR: (500, oa.SERVER_ERROR),
    FaultKind.UNAVAILABLE: (503, oa.UNAVAILABLE),
    FaultKind.MALFORMED: (200, oa.MALFORMED),
    FaultKind.HTML: (200, oa.HTML),
}
_HTML_TYPE = [(b"content-type", b"text/html")]


def _prompt_of(body: Any, chat: bool) -> str:
    if not isinstance(body, dict):
        return ""
    if chat:
        messages = body.get("messages")
        return chat_prompt(messages)[0] if isinstance(messages, list) else ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\n\n".join(str(p) for p in prompt)
    return prompt if isinstance(prompt, str) else ""


class FakeApp:
    """Routes, knobs, faults, log and metrics of one fake server."""

    def __init__(
        self, config: FakeOptions, log: RequestLog | None = None, script: Script | None = None
    ) -> None:
        self.config = config
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.log = log if log is not None else RequestLog(config.log_limit)
        self.script = script
        self.metrics = Metrics()
        self.created = int(time.time())
        self._models = frozenset((config.model, *config.adapters))
        self._slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        self._stopping = False
        self._sleepers: set[asyncio.Future[bool]] = set()
        self._ids = itertools.count(1)
        self._models_body = oa.models_body(
            config.model, list(config.adapters), config.max_model_len, self.created
        )
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[int | None]]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._list_models,
            ("GET", "/v1/health/ready"): self._health,
            ("GET", "/v1/health/live"): self._health,
            ("GET", "/health"): self._health,
            ("GET", "/v1/metrics"): self._metrics,
            ("GET", "/metrics"): self._metrics,
        }
        self._control = ControlRoutes(self).routes()

    # -- ASGI entry ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = (scope["method"], scope["path"])
            route = self._routes.get(key)
            if route is not None:
                await route(scope, receive, send)
                return
            control = self._control.get(key)
            if control is not None:
                await control(receive, send)
                return
            await self._not_found(scope, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.begin_shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def begin_shutdown(self) -> None:
        """End every latency sleep and hang now; call on the server's loop."""
        self._stopping = True
        for future in list(self._sleepers):
            resolve(future, False)

    async def _sleep(self, seconds: float) -> None:
        """Sleep without blocking other requests; raises Stopping if the server stops meanwhile."""
        if self._stopping:
            raise Stopping
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        handle = loop.call_later(seconds, resolve, future, True)
        self._sleepers.add(future)
        try:
            if not await future:
                raise Stopping
        finally:
            handle.cancel()
            self._sleepers.discard(future)

    def _record(self, scope: Scope, status: int | None, started: float, **fields: Any) -> None:
        self.metrics.count(scope["path"], status)
        if not self.log.enabled:  # benchmarks turn the log off; skip building the record
            return
        values = {"model": None, "body": None, "prompt": "", "fault": None, "stream": False, **fields}
        values["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        values["query"] = scope.get("query_string", b"").decode("latin-1")
        self.log.append(
            RequestRecord(
                scope["method"], scope["path"], status=status, started=started, ended=time.time(), **values
            )
        )

    def _auth_error(self, scope: Scope) -> oa.RequestError | None:
        """None when no key is needed or the right bearer token came; else the 401 to send."""
        if self.config.api_key is None:
            return None
        given = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                given = token.strip() if scheme.lower() == "bearer" else None
                break
        return None if given == self.config.api_key else oa.unauthorized(given)

    # -- simple endpoints ---------------------------------------------------------------------
    async def _health(self, scope: Scope, receive: Receive, send: Send) -> int:
        started = time.time()
        await respond(send, 200, b'{"object":"health.response","message":"Service is ready."}')
        self._record(scope, 200, started)
        return 200

    async def _list_models(self, scope: Scope, receive: Receive, send: Send) -> int:
        started = time.time()
        error = self._auth_error(scope)
        status, body = (200, self._models_body) if error is None else (error.status, error.body())
        await respond(send, status, body)
        self._record(scope, status, started)
        return status

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        started = time.time()
        body = self.metrics.render(self.config.model).encode()
        head = [
            (b"content-type", b"text/plain; version=0.0.4"),
            MARK,
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": body})
        self._record(scope, 200, started)
        return 200

    async def _not_found(self, scope: Scope, send: Send) -> None:
        started = time.time()
        known = {path for _, path in (*self._routes, *self._control)}
        status = 405 if scope["path"] in known else 404
        message = "Method Not Allowed" if status == 405 else f"Not Found: {scope['path']}"
        await respond(send, status, oa.error_body(message, "NotFoundError", status))
        self._record(scope, status, started)

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Deterministic vectors made from each input's words (no faults, no latency)."""
        started = time.time()
        try:
            raw = await read_body(receive)
        except Disconnected:
            return 0
        auth_error = self._auth_error(scope)
        try:
            if auth_error is not None:
                raise auth_error
            body = json.loads(raw)
            status, reply = 200, oa.embeddings_body(body, self.config.model)
        except oa.RequestError as error:
            body, status, reply = None, error.status, error.body()
        except ValueError:
            body, status = None, 400
            reply = oa.error_body("The request body is not valid JSON.", "BadRequestError", 400)
        await respond(send, status, reply)
        self._record(
            scope, status, started, body=body, model=body.get("model") if isinstance(body, dict) else None
        )
        return status

    # -- inference ----------------------------------------------------------------------------
    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        return await self._inference(scope, receive, send, chat=True)

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        return await self._inference(scope, receive, send, chat=False)

    async def _inference(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> int | None:
        started = time.time()
        status: int | None = None
        body: Any = None
        fault: FaultKind = FaultKind.OK
        stream = False
        try:
            raw = await read_body(receive)
            auth_error = self._auth_error(scope)
            if auth_error is not None:
                raise auth_error
            try:
                body = json.loads(raw)
            except ValueError:
                raise oa.bad_request("The request body is not valid JSON.") from None
            stream = isinstance(body, dict) and bool(body.get("stream"))
            fault = self.faults.next()
            if fault is not FaultKind.OK:
                self.metrics.faults[fault.value] = self.metrics.faults.get(fault.value, 0) + 1
                status = await self._fault(fault, send)
                if status is not None or fault is not FaultKind.TRUNCATE:
                    return status
            if self.script is not None:
                reply = self.script(body)
                if reply is not None:
                    status = await self._scripted(reply, send)
                    if status != -1:
                        return status
                    status = None
            job = oa.parse_job(body, chat, self._models, self.config.model, self.config.max_model_len)
            status = await self._generate(job, send, truncate=fault is FaultKind.TRUNCATE)
        except oa.RequestError as error:
            status = error.status
            await respond(send, status, error.body())
        except Stopping:
            await drop(send)
        except Disconnected:
            pass
        finally:
            if self.log.enabled:
                self._record(
                    scope,
                    status,
                    started,
                    model=body.get("model") if isinstance(body, dict) else None,
                    body=body,
                    prompt=_prompt_of(body, chat),
                    fault=None if fault is FaultKind.OK else fault.value,
                    stream=stream,
                )
            else:
                self.metrics.count(scope["path"], status)
        return status

    async def _fault(self, fault: FaultKind, send: Send) -> int | None:
        """Act out a fault; returns the status sent (None: no response, or go on for truncate)."""
        plan: FaultPlan = self.faults.plan
        if fault in _IMMEDIATE:
            status, body = _IMMEDIATE[fault]
            headers = None
            if fault is FaultKind.RATE_LIMIT:
                seconds = f"{plan.retry_after:g}".encode()
                ms = str(round(plan.retry_after * 1000)).encode()
                headers = [(b"retry-after", seconds), (b"retry-after-ms", ms)]
            await respond(send, status, body, _HTML_TYPE if fault is FaultKind.HTML else headers)
            return status
        if fault is FaultKind.HANG:
            with contextlib.suppress(Stopping):
                await self._sleep(plan.hang_seconds)
            await drop(send)
        elif fault is FaultKind.DROP:
            await drop(send)
        return None

    async def _scripted(self, reply: Reply, send: Send) -> int | None:
        """Send a scripted reply; -1 when the fake's own answer is to follow its delay."""
        metrics = self.metrics
        metrics.running(1)
        try:
            await self._sleep(self.config.latency_ms / 1000 + reply.delay)
            if reply.drop:
                await drop(send)
                return None
            headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
            if reply.events is not None:
                head = [*SSE_HEADERS, *headers]
                await send({"type": "http.response.start", "status": reply.status, "headers": head})
                for event in reply.events:
                    data = b"data: " + oa.dumps(event) + b"\n\n"
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": oa.STREAM_DONE})
                return reply.status
            if reply.body is None:
                return -1
            await respond(send, reply.status, oa.dumps(reply.body), headers)
            return reply.status
        finally:
            metrics.running(-1)

    async def _generate(self, job: oa.Job, send: Send, truncate: bool) -> int:
        answers = [oa.answer(job, prompt, truncate) for prompt in job.prompts for _ in range(job.n)]
        self.metrics.prompt_tokens += job.prompt_tokens
        self.metrics.completion_tokens += sum(a.tokens for a in answers)
        prefix = "chatcmpl" if job.chat else "cmpl"
        request_id = f"{prefix}-fake{next(self._ids):010d}"
        metrics = self.metrics
        if self._slots is not None and self._slots.locked():
            metrics.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                metrics.waiting -= 1
        elif self._slots is not None:
            await self._slots.acquire()
        metrics.running(1)
        try:
            if job.stream:
                await self._stream(job, request_id, answers, send)
            else:
                per_token = self.config.latency_per_token_ms * max(a.tokens for a in answers)
                await self._sleep((self.config.latency_ms + per_token) / 1000)
                await respond(send, 200, oa.completion_body(job, request_id, answers))
        finally:
            metrics.running(-1)
            if self._slots is not None:
                self._slots.release()
        return 200

    async def _stream(self, job: oa.Job, request_id: str, answers: list[oa.Answer], send: Send) -> None:
        created = int(time.time())
        await self._sleep(self.config.latency_ms / 1000)
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        if job.chat:
            for index in range(len(answers)):
                await emit(oa.chunk(job, request_id, created, index, None, None))
        # Choices are generated side by side, one token per step, as a batched server does.
        tokens = [pieces(a.text) for a in answers]
        per_token = self.config.latency_per_token_ms / 1000
        for step in range(max(len(t) for t in tokens)):
            if per_token:
                await self._sleep(per_token)
            for index, choice in enumerate(tokens):
                if step < len(choice):
                    await emit(oa.chunk(job, request_id, created, index, choice[step], None))
        for index, a in enumerate(answers):
            await emit(oa.chunk(job, request_id, created, index, None, a.finish_reason))
        if job.include_usage:
            await emit(oa.usage_chunk(job, request_id, created, sum(a.tokens for a in answers)))
        await send({"type": "http.response.body", "body": oa.STREAM_DONE})

    def configure(self, **updates: Any) -> None:
        """Change live options (latencies, faults); call on the server's loop or between requests."""
        if "faults" in updates:
            updates["faults"] = FaultPlan.coerce(updates["faults"])
        self.config = self.config.changed(updates)
        if "faults" in updates:
            self.faults.set(self.config.faults)
