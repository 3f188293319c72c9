"""One chat completion through an actor's client, its failures turned into nimflow errors.

`complete()` is what `chat`, `chat_many`, `extract` and `extract_many` call. `explain()` gathers what a
message needs (for a 404, the models the server offers: one quick request) and lets errors.py word it.
"""

from __future__ import annotations

from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from nimflow._exceptions import ModelCallError
from nimflow._redact import remember_secret
from nimflow.llm import errors
from nimflow.llm.context import ActorContext, call_item

__all__ = ["complete", "explain"]


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
    remember_secret(ctx.client.api_key)  # a context built by hand, around plain clients
    urls = ", ".join(ctx.replica_urls)
    if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, ModelCallError):
        return exc.__cause__  # explained by the transport (errors.TransportFailures)
    if isinstance(exc, openai.APITimeoutError):
        return errors.timed_out(item_id, ctx.name, urls, None)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = str(cause) if cause is not None and str(cause) else "connection failed"
        return errors.unreachable(item_id, ctx.name, urls, detail)
    if not isinstance(exc, openai.APIStatusError):
        return exc
    return errors.from_status(
        exc,
        item_id=item_id,
        actor=ctx.name,
        urls=urls,
        model=model or ctx.model,
        api_key_name=ctx.api_key_name,
        models=await available_models(ctx) if exc.status_code == 404 else None,
    )


async def complete(
    ctx: ActorContext,
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    item_id: str | None = None,
    **params: Any,
) -> ChatCompletion:
    """One chat completion; openai errors become nimflow errors naming the item."""
    model = model or ctx.model
    token = call_item.set(item_id)
    try:
        result: ChatCompletion = await ctx.client.chat.completions.create(
            model=model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            **params,
        )
    except openai.OpenAIError as exc:
        raise await explain(exc, ctx=ctx, item_id=item_id, model=model) from None
    finally:
        call_item.reset(token)
    return result
