"""One chat completion through an actor's client, its failures turned into nimflow errors.

`complete()` is what `chat`, `chat_many`, `extract` and `extract_many` call. `explain()` gathers what a
message needs (for a 404, the models the server offers: one quick request) and lets errors.py word it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from nimflow._exceptions import ModelCallError
from nimflow._redact import remember_secret
from nimflow.llm.context import ActorContext, call_item

if TYPE_CHECKING:
    import openai

# openai and errors.py load when a call fails, not with the module: the helpers post through
# the actor's poster (nimflow.llm.poster), and a run whose calls succeed never imports openai.

__all__ = ["Completion", "complete", "explain"]


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
    import openai

    from nimflow.llm import errors

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


@dataclass(frozen=True, slots=True)
class Completion:
    """What the helpers read of a chat completion (its first choice and the token usage)."""

    content: str | None
    refusal: str | None
    finish_reason: str | None
    usage: tuple[int, int] | None  # (prompt_tokens, completion_tokens)


# Keyword arguments of `create()` that are request options, not body fields.
_OPTIONS = ("extra_headers", "extra_query", "timeout")


async def complete(
    ctx: ActorContext,
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    item_id: str | None = None,
    **params: Any,
) -> Completion:
    """One chat completion; openai errors become nimflow errors naming the item.

    The body is posted as given and the transport's parsed JSON is read: the SDK's request
    transformation and response-model construction, which nothing here reads, cost about as much
    CPU per call as everything else together.
    """
    model = model or ctx.model
    body: dict[str, Any] = {"model": model, "messages": messages}
    options: dict[str, Any] = {}
    openai = sys.modules.get("openai")  # an openai.NOT_GIVEN value means openai is imported already
    for key, value in params.items():
        if openai is not None and isinstance(value, openai.NotGiven | openai.Omit):
            continue
        if key in _OPTIONS:
            options[key] = value
        elif key == "extra_body":
            body.update(value or {})
        else:
            body[key] = value
    token = call_item.set(item_id)
    try:
        if ctx.poster is not None:
            data = await ctx.poster.post(body, **options)
        else:  # a context built by hand around plain clients: through the SDK's own request path
            data = await _post_through_sdk(ctx.client, body, options)
    except Exception as exc:
        explained = await _explained(exc, ctx, item_id, model)
        if explained is exc:
            raise
        raise explained from None
    finally:
        call_item.reset(token)
    return _completion(data, item_id, ctx.name)


async def _explained(exc: Exception, ctx: ActorContext, item_id: str | None, model: str) -> Exception:
    """What `complete` raises for `exc`: openai errors explained, a body that is not JSON (from a
    plain client, without nimflow's transport) as malformed, anything else as it is."""
    import openai

    from nimflow.llm import errors

    if isinstance(exc, openai.OpenAIError):
        explained = await explain(exc, ctx=ctx, item_id=item_id, model=model)
        return explained if isinstance(explained, Exception) else exc
    if isinstance(exc, ValueError):
        return errors.malformed(item_id, ctx.name, str(exc))
    return exc


async def _post_through_sdk(client: openai.AsyncOpenAI, body: dict[str, Any], options: dict[str, Any]) -> Any:
    import httpx2

    request_options = {
        {"extra_headers": "headers", "extra_query": "params"}.get(key, key): value
        for key, value in options.items()
    }
    response = await client.post(
        "/chat/completions", body=body, cast_to=httpx2.Response, options=cast("Any", request_options)
    )
    return response.json()


def _completion(data: Any, item_id: str | None, actor: str) -> Completion:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        from nimflow.llm import errors

        raise errors.malformed(item_id, actor, f"no choices in {str(data)[:80]!r}")
    choice = choices[0] if choices and isinstance(choices[0], dict) else None
    message = choice.get("message") if choice is not None else None
    message = message if isinstance(message, dict) else {}
    usage = data.get("usage")
    tokens = (
        (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        if isinstance(usage, dict)
        else None
    )
    return Completion(
        content=message.get("content"),
        refusal=message.get("refusal"),
        finish_reason=choice.get("finish_reason") if choice is not None else None,
        usage=tokens,
    )
