"""Errors of model calls, each naming the item and saying what to do next.

`explain()` turns what the openai client raised into one of these. API keys never appear in a
message: server text is scrubbed of the key before it is quoted.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import openai

from nimflow._exceptions import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    EndpointUnreachableError,
    ModelCallError,
    ModelNotServedError,
)

if TYPE_CHECKING:
    from nimflow.llm.context import ActorContext

__all__ = ["explain", "redact", "server_message"]


_CONTEXT_HINTS = (
    "context length",
    "context window",
    "maximum context",
    "max_model_len",
    "max model len",
    "too long",
    "too many tokens",
    "exceeds the maximum",
    "maximum input length",
)


def _who(item_id: str | None) -> str:
    return f"item {item_id!r}" if item_id is not None else "model call"


def redact(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def server_message(exc: openai.APIStatusError) -> str:
    """The `error.message` (or `detail`) of an OpenAI-style error body, else the raw text, trimmed."""
    body = exc.body
    msg: object = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None:
            msg = body.get("detail") or body.get("message")
    if msg is None:
        try:
            msg = exc.response.text
        except Exception:
            msg = ""
    text = msg if isinstance(msg, str) else json.dumps(msg)
    return text.strip()[:500]


async def available_models(ctx: ActorContext) -> list[str] | None:
    """Model ids `/v1/models` offers, or None when that cannot be had quickly."""
    try:
        page = await ctx.client.with_options(timeout=5.0).models.list()
        return [m.id for m in page.data]
    except Exception:
        return None


async def explain(
    exc: BaseException,
    *,
    ctx: ActorContext,
    item_id: str | None = None,
    model: str | None = None,
) -> BaseException:
    """A clear ModelCallError for what `ctx.client` raised; `exc` itself if it is no model error."""
    who = _who(item_id)
    model = model or ctx.model
    key = ctx.client.api_key
    urls = ", ".join(ctx.replica_urls)
    if isinstance(exc, openai.APITimeoutError):
        return EndpointUnreachableError(
            f"{who}: the model server of actor {ctx.name!r} ({urls}) did not answer in time, even after "
            "retries. Check that it is healthy and not overloaded (`nimflow actors ls`), lower the "
            "concurrency, or raise the actor's timeout.",
            item_id=item_id,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = redact(str(cause), key) if cause is not None and str(cause) else "connection failed"
        return EndpointUnreachableError(
            f"{who}: cannot reach the model server of actor {ctx.name!r} at {urls} ({detail}). Check that "
            "the server is running and listening on that address (`nimflow actors ls`; for an "
            "endpoint you run yourself, check its base URL and port).",
            item_id=item_id,
        )
    if not isinstance(exc, openai.APIStatusError):
        return exc
    status = exc.status_code
    msg = redact(server_message(exc), key)
    if status in (401, 403):
        where = (
            f"the secret or environment variable {ctx.api_key_name}"
            if ctx.api_key_name
            else ("the actor's API key secret (nf.Secret / `nimflow secret create NAME`)")
        )
        return AuthenticationError(
            f"{who}: the model server of actor {ctx.name!r} ({urls}) rejected the API key (HTTP {status}). "
            f"Set the right key in {where} and run again.",
            item_id=item_id,
            status_code=status,
        )
    if status == 404:
        models = await available_models(ctx)
        offer = f" It serves: {', '.join(models)}." if models else " List what it serves with GET /v1/models."
        return ModelNotServedError(
            f"{who}: model {model!r} is not served by actor {ctx.name!r} ({urls}): {msg}.{offer} Pass one "
            "of those as model=... (a LoRA adapter is chosen by its name), or add the adapter to the "
            "actor's server.",
            item_id=item_id,
            status_code=status,
        )
    if status in (400, 413, 422) and any(h in msg.lower() for h in _CONTEXT_HINTS):
        return ContextLengthError(
            f"{who}: the prompt is too long for model {model!r}; the server said: {msg}. Shorten or split "
            "this item's input, lower max_tokens, or serve the model with a longer context "
            "(e.g. vLLM --max-model-len).",
            item_id=item_id,
            status_code=status,
        )
    if status in (400, 422):
        return BadRequestError(
            f"{who}: the server rejected the request (HTTP {status}): {msg}. Fix the request's "
            "parameters for this model (messages, max_tokens, response_format).",
            item_id=item_id,
            status_code=status,
        )
    return ModelCallError(
        f"{who}: the model server of actor {ctx.name!r} kept failing (HTTP {status}: {msg}) after "
        "retries. It may be overloaded or unhealthy: check its logs and `nimflow actors ls`, or lower "
        "the concurrency.",
        item_id=item_id,
        status_code=status,
    )
