"""Sending one Batch request through an actor's client, and ``batch()`` for use in an actor task
(also ``nf.llm.batch``), which stores each answer in the result cache as it arrives.

A server's answer is the request's response, whatever its status (a 4xx is the caller's to
see, as in the Batch API, and is not retried). What the transport could not get answered
(429 or 5xx after its retries, a dropped connection) and a 200 whose body is not JSON raise
``BatchRequestError``: the task's own retries send it again, and a rerun sends it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import openai
from sqlmodel import col, select

from nimflow._cache import cache_key
from nimflow._context import current_run_id, session
from nimflow._exceptions import BatchRequestError
from nimflow._tables import CacheEntry

from ._format import SUPPORTED_URLS, Request, output_line

if TYPE_CHECKING:
    from nimflow.llm.context import ActorContext

_RETRIED = {408, 409, 429}  # statuses that are the server's trouble, not the request's


def _request_id(response: httpx2.Response, body: Any) -> str:
    header = response.headers.get("x-request-id")
    if header:
        return str(header)
    return str(body.get("id", "")) if isinstance(body, dict) else ""


async def send(ctx: ActorContext, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"status_code", "request_id", "body"}`` of one request, sent to the actor's replicas."""
    if url not in SUPPORTED_URLS:
        raise BatchRequestError(f"{url!r} is not supported; use one of {', '.join(SUPPORTED_URLS)}.")
    payload = dict(body)
    payload.setdefault("model", ctx.model)
    try:
        response = await ctx.client.post(url.removeprefix("/v1"), cast_to=httpx2.Response, body=payload)
    except openai.APIStatusError as error:
        status = error.status_code
        if status >= 500 or status in _RETRIED:
            raise BatchRequestError(f"HTTP {status} from the server after retries: {error.message}") from None
        response = error.response
    except openai.APIConnectionError as error:
        raise BatchRequestError(f"no answer from the server: {error}") from None
    try:
        answer = json.loads(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "unknown content type")
        raise BatchRequestError(
            f"HTTP {response.status_code} with a body that is not JSON ({kind}): {response.text[:80]!r}"
        ) from None
    return {"status_code": response.status_code, "request_id": _request_id(response, answer), "body": answer}


async def batch(
    requests: Iterable[Mapping[str, Any]], *, concurrency: int | None = None, ctx: ActorContext | None = None
) -> list[dict[str, Any]]:
    """Answer Batch request lines inside an actor task; the output lines, in input order.

    Each request is ``{"custom_id", "url", "body"}`` (``method`` POST); the result has the Batch
    output shape: ``{"id", "custom_id", "response", "error"}``. A 4xx is its line's response; a
    request that got no usable answer has ``error`` set. Each answer is stored as it arrives
    (keyed on the url, the body and what serves it), so after an interruption the same call sends
    only the requests not yet answered.
    """
    from nimflow.llm.context import current_actor

    actor = ctx or current_actor()
    items = [
        Request(i + 1, str(r["custom_id"]), str(r.get("url", "")), dict(r["body"]))
        for i, r in enumerate(requests)
    ]
    keys = [_key(actor, r) for r in items]
    stored = await anyio.to_thread.run_sync(_stored, keys)
    lines: list[str] = [""] * len(items)
    limiter = anyio.CapacityLimiter(concurrency or actor.capacity)

    async def one(index: int, request: Request) -> None:
        if keys[index] in stored:
            lines[index] = output_line(request, stored[keys[index]], None)
            return
        async with limiter:
            try:
                response = await send(actor, request.url, request.body)
            except BatchRequestError as error:
                code = "invalid_url" if not request.supported else "request_failed"
                lines[index] = output_line(request, None, {"code": code, "message": str(error)})
                return
        await anyio.to_thread.run_sync(_store, keys[index], response)
        lines[index] = output_line(request, response, None)

    async with anyio.create_task_group() as group:
        for index, request in enumerate(items):
            group.start_soon(one, index, request)
    return [json.loads(line) for line in lines]


_TASK = "nimflow.llm.batch"  # the cache rows' task name
_LOOKUP = 500  # keys per query


def _key(actor: ActorContext, request: Request) -> str:
    body = {**request.body}
    body.setdefault("model", actor.model)
    return cache_key(_TASK, "1", {"url": request.url, "body": body}, actor.served_by)


def _stored(keys: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with session() as db:
        for start in range(0, len(keys), _LOOKUP):
            chosen = keys[start : start + _LOOKUP]
            rows = db.exec(select(CacheEntry).where(col(CacheEntry.key).in_(chosen))).all()
            found.update((row.key, json.loads(row.output)) for row in rows)
    return found


def _store(key: str, response: dict[str, Any]) -> None:
    with session() as db:
        db.merge(
            CacheEntry(
                key=key,
                task=_TASK,
                cache_version="1",
                source_hash="",
                output=json.dumps(response),
                run_id=current_run_id(),
            )
        )
        db.commit()
