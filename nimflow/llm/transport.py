"""The routing transports under the openai clients: pick a replica, cap its in-flight requests, fail over.

One core, two thin shells (as httpx shares its clients' logic): `_Send`, one request's walk over the
replicas, owns every decision (the replica to try and the URL there, the headers, where a refused
connection goes, whether the answer is streamed, what a response becomes, when a slot is freed).
The shells only do the I/O: `AsyncRoutingTransport` over one aiohttp session (its connector keeps a
free-list per host, so a request's cost does not grow with the number of open connections, unlike
the httpx2 pool, which scans every connection on each request), `SyncRoutingTransport` over one
httpx2 transport per replica URL, for worker threads.

A refused connection means nothing was sent: the replica is taken out of rotation and the request goes
straight to another one, without counting as a retry. Everything else worth another try is left to the
retry layer (retry.py), which wraps this transport. Non-streamed bodies are read here, so a replica's
slot is freed as soon as its answer is in and the token usage can be read off the bytes; streamed (SSE)
bodies are passed through and free their slot when closed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx2

from nimflow.llm.bodies import JSONResponse, Tail, expected_json, record_parsed_tokens, record_tokens
from nimflow.llm.router import Replica, Router
from nimflow.llm.usage import current_usage

__all__ = ["AsyncRoutingTransport", "SyncRoutingTransport"]

# Headers not passed on: Host names the logical base URL, not the chosen replica; compression is
# refused because the servers are local and usage is read off the raw bytes.
_DROP = frozenset({"host", "accept-encoding", "content-length", "transfer-encoding", "connection"})
_IDENTITY = ("accept-encoding", "identity")
_SSE = "text/event-stream"


class _Send:
    """One request's walk over the replicas: its routed form, the replicas that refused it, its slot."""

    __slots__ = (
        "content",
        "expects_json",
        "headers",
        "last",
        "pool_timeout",
        "request",
        "routing",
        "tried",
        "usage",
    )

    def __init__(self, routing: _Routing, request: httpx2.Request) -> None:
        self.routing = routing
        self.request = request
        headers: list[tuple[str, str]] = []
        self.expects_json = False
        for k, v in request.headers.multi_items():
            if k in _DROP:
                continue
            if k == "accept":
                self.expects_json = "json" in v
            headers.append((k, v))
        headers.append(_IDENTITY)
        self.headers = headers
        self.content = request.content
        timeout = request.extensions.get("timeout") or {}
        self.pool_timeout: float | None = timeout.get("pool")
        self.usage = current_usage()
        self.tried: set[tuple[int, str]] = set()
        self.last: Exception | None = None

    def route(self, replica: Replica) -> tuple[str, str]:
        """The replica's URL and the request's URL there; raises the last refusal once every
        replica has refused this request (then the retry layer backs off)."""
        url = replica.url
        if (replica.index, url) in self.tried:
            self.routing.router.release(replica)
            assert self.last is not None
            raise self.last
        full = str(self.request.url)
        prefix = self.routing.prefix
        return url, (url + full[len(prefix) :] if full.startswith(prefix) else full)  # elsewhere: left alone

    def refused(self, replica: Replica, url: str, exc: Exception) -> None:
        """Nothing was sent: the replica goes out of rotation and the request on to another one."""
        router = self.routing.router
        router.release(replica)
        router.mark_down(replica, url)
        self.tried.add((replica.index, url))
        self.last = exc

    def failed(self, replica: Replica) -> None:
        """Any other failure to send: the slot is freed, the error goes up (to the retry layer)."""
        self.routing.router.release(replica)

    def connected(self, replica: Replica) -> _SlotGuard:
        """An answer came: a replica that was out of rotation is back; its slot is held until the
        body is read (or, streamed, until the stream is closed)."""
        if not replica.up:
            self.routing.router.mark_up(replica)
        return _SlotGuard(self.routing.router, replica)

    @staticmethod
    def streamed(status: int, content_type: str) -> bool:
        """Whether the body is passed through as a stream (SSE) rather than read here."""
        return status < 400 and content_type.startswith(_SSE)

    def response(self, status: int, headers: Any, data: bytes, url: str) -> httpx2.Response:
        """The answer to hand up, its body read. A success the client expects JSON of is parsed here,
        once: a body that is not the JSON asked for (a proxy's HTML page, a cut-off body) raises
        DecodingError for the retry layer, and the SDK gets the parsed value instead of parsing again."""
        request = self.request
        if status >= 300:
            return httpx2.Response(status, headers=headers, content=data, request=request)
        if not self.expects_json:
            record_tokens(self.usage, data)
            return httpx2.Response(status, headers=headers, content=data, request=request)
        parsed = expected_json(data, request, url)
        if self.usage is not None:
            record_parsed_tokens(self.usage, parsed)
        return JSONResponse(parsed, status, headers=headers, content=data, request=request)


class _Routing:
    """What both transports share: the router and the logical base URL the clients are built on."""

    def __init__(self, router: Router, base_url: str) -> None:
        self.router = router
        self.prefix = base_url.rstrip("/")

    def start(self, request: httpx2.Request) -> _Send:
        return _Send(self, request)


def _refused(url: str, exc: BaseException) -> httpx2.ConnectError:
    """The same words for a connection that failed, whichever client saw it (aiohttp, httpx2)."""
    seen: BaseException | None = exc
    while seen is not None and not (isinstance(seen, OSError) and seen.errno):
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    reason = os.strerror(seen.errno).lower() if isinstance(seen, OSError) and seen.errno else str(exc)
    return httpx2.ConnectError(f"cannot connect to {url}: {reason}")


def _pool_timeout() -> httpx2.PoolTimeout:
    return httpx2.PoolTimeout("timed out waiting for a free replica slot")


class _SlotGuard:
    """Releases a replica slot exactly once (a stream may be closed more than once)."""

    __slots__ = ("released", "replica", "router")

    def __init__(self, router: Router, replica: Replica) -> None:
        self.router = router
        self.replica = replica
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.router.release(self.replica)


# --------------------------------------------------------------------------------------------------
# async (aiohttp)


def _map_aiohttp(exc: BaseException, url: str) -> Exception:
    """The httpx2 exception the openai client and the retry layer understand, for an aiohttp one."""
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx2.ReadTimeout(f"no data from {url} within the read timeout")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(f"connecting to {url} timed out")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx2.TimeoutException(f"request to {url} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _refused(url, exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx2.RemoteProtocolError(f"{url} closed the connection without a response")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return httpx2.ReadError(f"connection to {url} failed: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx2.RemoteProtocolError(f"bad HTTP response from {url}: {exc.message}")
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx2.UnsupportedProtocol(f"invalid URL {url}")
    return httpx2.TransportError(f"request to {url} failed: {exc!r}")


class _AsyncSSE(httpx2.AsyncByteStream):
    def __init__(self, resp: aiohttp.ClientResponse, guard: _SlotGuard, tail: Tail, url: str) -> None:
        self._resp = resp
        self._guard = guard
        self._tail = tail
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                self._tail.keep(chunk)
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc, self._url) from exc
        self._tail.finish()

    async def aclose(self) -> None:
        # A stream left half-read cannot go back to the pool: its connection still has data on it.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()
        self._guard.release()


class AsyncRoutingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, router: Router, base_url: str) -> None:
        self._routing = _Routing(router, base_url)
        self._router = router
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, Any], aiohttp.ClientTimeout] = {}

    def _new_session(self) -> aiohttp.ClientSession:
        # The router caps requests per replica, so the connector itself is unlimited.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )
        return self._session

    def _timeout(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        t = request.extensions.get("timeout") or {}
        key = (t.get("connect"), t.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._new_session()
        timeout = self._timeout(request)
        send = self._routing.start(request)
        body = send.content or None
        while True:
            try:
                replica = await self._router.acquire(send.pool_timeout)
            except TimeoutError as exc:
                raise _pool_timeout() from exc
            url, target = send.route(replica)
            try:
                resp = await session.request(
                    request.method,
                    target,
                    headers=send.headers,
                    data=body,
                    allow_redirects=False,
                    timeout=timeout,
                )
            except aiohttp.ClientConnectorError as exc:
                send.refused(replica, url, _map_aiohttp(exc, url))
                continue
            except BaseException as exc:
                send.failed(replica)
                if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
                    raise _map_aiohttp(exc, url) from exc
                raise
            return await self._response(send, resp, send.connected(replica), url)

    async def _response(
        self, send: _Send, resp: aiohttp.ClientResponse, guard: _SlotGuard, url: str
    ) -> httpx2.Response:
        status = resp.status
        if send.streamed(status, resp.content_type):
            stream = _AsyncSSE(resp, guard, Tail(send.usage), url)
            return httpx2.Response(status, headers=resp.raw_headers, stream=stream, request=send.request)
        try:
            data = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc, url) from exc
        finally:
            resp.release()
            guard.release()
        return send.response(status, resp.raw_headers, data, url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------------------------------
# sync (one httpx2 transport per replica URL; used from worker threads)


class _SyncSSE(httpx2.SyncByteStream):
    def __init__(self, response: httpx2.Response, guard: _SlotGuard, tail: Tail) -> None:
        self._response = response
        self._guard = guard
        self._tail = tail

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._response.iter_raw():
            self._tail.keep(chunk)
            yield chunk
        self._tail.finish()

    def close(self) -> None:
        self._response.close()
        self._guard.release()


class SyncRoutingTransport(httpx2.BaseTransport):
    def __init__(self, router: Router, base_url: str) -> None:
        self._routing = _Routing(router, base_url)
        self._router = router
        self._transports: dict[str, httpx2.HTTPTransport] = {}
        limit = router.max_in_flight
        self._limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=limit)

    def _transport(self, url: str) -> httpx2.HTTPTransport:
        t = self._transports.get(url)
        if t is None:
            # setdefault keeps one transport per URL when two threads race here.
            t = self._transports.setdefault(url, httpx2.HTTPTransport(limits=self._limits, trust_env=False))
        return t

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        send = self._routing.start(request)
        while True:
            try:
                replica = self._router.acquire_sync(send.pool_timeout)
            except TimeoutError as exc:
                raise _pool_timeout() from exc
            url, target = send.route(replica)
            routed = httpx2.Request(
                request.method,
                target,
                headers=send.headers,
                content=send.content,
                extensions=request.extensions,
            )
            try:
                resp = self._transport(url).handle_request(routed)
            except httpx2.ConnectError as exc:
                send.refused(replica, url, _refused(url, exc))
                continue
            except BaseException:
                send.failed(replica)
                raise
            guard = send.connected(replica)
            if send.streamed(resp.status_code, resp.headers.get("content-type", "")):
                stream = _SyncSSE(resp, guard, Tail(send.usage))
                return httpx2.Response(resp.status_code, headers=resp.headers, stream=stream, request=request)
            try:
                data = resp.read()
            finally:
                resp.close()
                guard.release()
            return send.response(resp.status_code, resp.headers, data, url)

    def close(self) -> None:
        for t in list(self._transports.values()):
            t.close()
        self._transports.clear()
