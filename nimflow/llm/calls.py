"""One chat completion through an actor's client, its failures turned into nimflow errors.

`complete()` is what `chat`, `chat_many`, `extract` and `extract_many` call. `explain()` gathers what a
message needs (for a 404, the models the server offers: one quick request) and lets errors.py word it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from nimflow._exceptions import ModelCallError
from nimflow.llm import errors
from nimflow.llm.context import ActorContext
from nimflow.llm.usage import current_usage

__all__ = ["complete", "explain"]

log = logging.getLogger("nimflow.llm")

# A 200 whose body is not valid JSON (a proxy's HTML, a cut-off body) is worth another try, but the
# transport cannot see that without parsing every body; it is caught here, a few times at most.
_MALFORMED_ATTEMPTS = 3


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
    urls = ", ".join(ctx.replica_urls)
    if isinstance(exc, openai.APITimeoutError):
        return errors.timed_out(item_id, ctx.name, urls)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = str(cause) if cause is not None and str(cause) else "connection failed"
        return errors.unreachable(item_id, ctx.name, urls, errors.redact(detail, ctx.client.api_key))
    if not isinstance(exc, openai.APIStatusError):
        return exc
    return errors.from_status(
        exc,
        item_id=item_id,
        actor=ctx.name,
        urls=urls,
        model=model or ctx.model,
        api_key=ctx.client.api_key,
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
    for attempt in range(1, _MALFORMED_ATTEMPTS + 1):
        try:
            result: ChatCompletion = await ctx.client.chat.completions.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                **params,
            )
            return result
        except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
            if attempt == _MALFORMED_ATTEMPTS:
                raise ModelCallError(
                    f"{errors.who(item_id)}: the model server of actor {ctx.name!r} sent a malformed response "
                    f"{_MALFORMED_ATTEMPTS} times in a row ({type(exc).__name__}). Check the server's logs, "
                    "or whatever proxy sits in front of it.",
                    item_id=item_id,
                ) from None
            usage = current_usage()
            if usage is not None:
                usage.add(retries=1)
            log.debug("retrying %s after a malformed response (attempt %d)", item_id, attempt + 1)
        except openai.OpenAIError as exc:
            raise await explain(exc, ctx=ctx, item_id=item_id, model=model) from None
    raise AssertionError("unreachable")
