"""HTTP transports under the openai clients: route to replicas, cap in-flight, fail over, retry.

The async transport sends over one aiohttp session (its connector keeps a free-list per host, so the
cost of a request does not grow with the number of open connections, unlike the httpx/httpx2 pool
which scans every connection on each request). Non-streamed bodies are read here, so a replica's
slot is freed as soon as its answer is in and the token usage can be read off the bytes; streamed
(SSE) bodies are passed through and free their slot when closed.

A refused connection means nothing was sent: the replica is taken out of rotation and the request
goes straight to another one, without counting as a retry. Everything else that is worth another
try goes through the retry layer (retry.py), which wraps the routed send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx2

from nimflow.llm.retry import DEFAULT_POLICY, RetryPolicy, send_with_retries, send_with_retries_sync
from nimflow.llm.router import Replica, Router
from nimflow.llm.usage import Usage, current_usage, parse_usage

__all__ = ["AsyncRoutingTransport", "SyncRoutingTransport"]

# Headers not passed on: Host names the logical base URL, not the chosen replica; compression is
# refused because the servers are local and usage is read off the raw bytes.
_DROP = frozenset({"host", "accept-encoding", "content-length", "transfer-encoding", "connection"})
_IDENTITY = ("accept-encoding", "identity")
_SSE = "text/event-stream"
_TAIL_BYTES = 4096  # enough for the last SSE event, which carries `usage`


def _headers(request: httpx2.Request) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in request.headers.multi_items() if k not in _DROP]
    out.append(_IDENTITY)
    return out


def _record_tokens(usage: Usage | None, body: bytes) -> None:
    if usage is None:
        return
    tokens = parse_usage(body)
    if tokens is not None:
        usage.add(prompt_tokens=tokens[0], completion_tokens=tokens[1])


class _Route:
    """Maps a request URL under the client's base URL onto a replica's base URL."""

    def __init__(self, base_url: str) -> None:
        self.prefix = base_url.rstrip("/")

    def target(self, request: httpx2.Request, replica_url: str) -> str:
        url = str(request.url)
        if url.startswith(self.prefix):
            return replica_url + url[len(self.prefix) :]
        return url  # an absolute URL elsewhere: left alone


class _SlotGuard:
    """Releases a replica slot exactly once."""

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
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx2.ReadTimeout(f"no data from {url} within the read timeout")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(f"connecting to {url} timed out")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx2.TimeoutException(f"request to {url} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(f"cannot connect to {url}: {exc.os_error}")
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
    def __init__(
        self, resp: aiohttp.ClientResponse, guard: _SlotGuard, usage: Usage | None, url: str
    ) -> None:
        self._resp = resp
        self._guard = guard
        self._usage = usage
        self._url = url
        self._tail: list[bytes] = []
        self._tail_len = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                if self._usage is not None:
                    self._keep_tail(chunk)
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc, self._url) from exc
        _record_tokens(self._usage, b"".join(self._tail))
        self._usage = None

    def _keep_tail(self, chunk: bytes) -> None:
        self._tail.append(chunk)
        self._tail_len += len(chunk)
        while self._tail_len - len(self._tail[0]) >= _TAIL_BYTES:
            self._tail_len -= len(self._tail.pop(0))

    async def aclose(self) -> None:
        # A stream left half-read cannot go back to the pool: its connection still has data on it.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()
        self._guard.release()


class AsyncRoutingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, router: Router, base_url: str, *, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self._router = router
        self._route = _Route(base_url)
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, Any], aiohttp.ClientTimeout] = {}

    def _new_session(self) -> aiohttp.ClientSession:
        self._router.bind_loop(asyncio.get_running_loop())
        # The router caps requests per replica, so the connector itself is unlimited.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )
        return self._session

    def _timeout(self, request: httpx2.Request) -> tuple[aiohttp.ClientTimeout, float | None]:
        t = request.extensions.get("timeout") or {}
        key = (t.get("connect"), t.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
            self._timeouts[key] = timeout
        return timeout, t.get("pool")

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        usage = current_usage()
        if usage is not None:
            usage.add(requests=1)
        try:
            response = await send_with_retries(request, self._send_routed, self._policy)
        except BaseException:
            if usage is not None:
                usage.add(errors=1)
            raise
        if usage is not None and response.status_code >= 400:
            usage.add(errors=1)
        return response

    async def _send_routed(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._new_session()
        timeout, pool_timeout = self._timeout(request)
        usage = current_usage()
        body = request.content or None
        headers = _headers(request)
        tried: set[tuple[int, str]] = set()
        last: Exception | None = None
        while True:
            try:
                replica = await self._router.acquire(pool_timeout)
            except TimeoutError as exc:
                raise httpx2.PoolTimeout("timed out waiting for a free replica slot") from exc
            url = replica.url
            if (replica.index, url) in tried:
                # Every replica has refused this request once: let the retry layer back off.
                self._router.release(replica)
                assert last is not None
                raise last
            guard = _SlotGuard(self._router, replica)
            target = self._route.target(request, url)
            try:
                resp = await session.request(
                    request.method,
                    target,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=timeout,
                )
            except aiohttp.ClientConnectorError as exc:
                guard.release()
                self._router.mark_down(replica, url)
                tried.add((replica.index, url))
                last = _map_aiohttp(exc, url)
                continue
            except BaseException as exc:
                guard.release()
                if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
                    raise _map_aiohttp(exc, url) from exc
                raise
            if not replica.up:
                self._router.mark_up(replica)
            return await self._response(request, resp, guard, usage, url)

    async def _response(
        self,
        request: httpx2.Request,
        resp: aiohttp.ClientResponse,
        guard: _SlotGuard,
        usage: Usage | None,
        url: str,
    ) -> httpx2.Response:
        status = resp.status
        if status < 400 and resp.content_type == _SSE:
            return httpx2.Response(
                status,
                headers=resp.raw_headers,
                stream=_AsyncSSE(resp, guard, usage, url),
                request=request,
            )
        try:
            data = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc, url) from exc
        finally:
            resp.release()
            guard.release()
        if status < 300:
            _record_tokens(usage, data)
        return httpx2.Response(status, headers=resp.raw_headers, content=data, request=request)

    async def aclose(self) -> None:
        await self._router.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------------------------------
# sync (one httpx2 transport per replica URL; used from worker threads)


class _SyncSSE(httpx2.SyncByteStream):
    def __init__(self, response: httpx2.Response, guard: _SlotGuard, usage: Usage | None) -> None:
        self._response = response
        self._guard = guard
        self._usage = usage
        self._tail = b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._response.iter_raw():
            if self._usage is not None:
                self._tail = (self._tail + chunk)[-_TAIL_BYTES:]
            yield chunk
        _record_tokens(self._usage, self._tail)
        self._usage = None

    def close(self) -> None:
        self._response.close()
        self._guard.release()


class SyncRoutingTransport(httpx2.BaseTransport):
    def __init__(self, router: Router, base_url: str, *, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self._router = router
        self._route = _Route(base_url)
        self._policy = policy
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
        usage = current_usage()
        if usage is not None:
            usage.add(requests=1)
        try:
            response = send_with_retries_sync(request, self._send_routed, self._policy)
        except BaseException:
            if usage is not None:
                usage.add(errors=1)
            raise
        if usage is not None and response.status_code >= 400:
            usage.add(errors=1)
        return response

    def _send_routed(self, request: httpx2.Request) -> httpx2.Response:
        usage = current_usage()
        t = request.extensions.get("timeout") or {}
        headers = _headers(request)
        content = request.content
        tried: set[tuple[int, str]] = set()
        last: Exception | None = None
        while True:
            try:
                replica = self._router.acquire_sync(t.get("pool"))
            except TimeoutError as exc:
                raise httpx2.PoolTimeout("timed out waiting for a free replica slot") from exc
            url = replica.url
            if (replica.index, url) in tried:
                self._router.release(replica)
                assert last is not None
                raise last
            guard = _SlotGuard(self._router, replica)
            routed = httpx2.Request(
                request.method,
                self._route.target(request, url),
                headers=headers,
                content=content,
                extensions=request.extensions,
            )
            try:
                resp = self._transport(url).handle_request(routed)
            except httpx2.ConnectError as exc:
                guard.release()
                self._router.mark_down(replica, url)
                tried.add((replica.index, url))
                last = httpx2.ConnectError(f"cannot connect to {url}: {exc}")
                continue
            except BaseException:
                guard.release()
                raise
            if not replica.up:
                self._router.mark_up(replica)
            if resp.status_code < 400 and resp.headers.get("content-type", "").startswith(_SSE):
                return httpx2.Response(
                    resp.status_code,
                    headers=resp.headers,
                    stream=_SyncSSE(resp, guard, usage),
                    request=request,
                )
            try:
                data = resp.read()
            finally:
                resp.close()
                guard.release()
            if resp.status_code < 300:
                _record_tokens(usage, data)
            return httpx2.Response(resp.status_code, headers=resp.headers, content=data, request=request)

    def close(self) -> None:
        for t in list(self._transports.values()):
            t.close()
        self._transports.clear()
