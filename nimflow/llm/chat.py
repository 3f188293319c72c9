"""Concurrent chat completions over an actor: `chat_many` (ordered, per-item errors kept)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from nimflow._exceptions import ModelCallError
from nimflow.llm.context import ActorContext, current_actor
from nimflow.llm.errors import explain
from nimflow.llm.usage import current_usage

__all__ = ["ChatResult", "TokenUsage", "chat", "chat_many", "complete", "messages_for"]

log = logging.getLogger("nimflow.llm")

Prompt = str | Sequence[Mapping[str, Any]]

# A 200 whose body is not valid JSON (a proxy's HTML, a cut-off body) is worth another try, but the
# transport cannot see that without parsing every body; it is caught here, a few times at most.
_MALFORMED_ATTEMPTS = 3


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatResult:
    """One item's answer: `text` when it worked, else `error` (a message saying what to do)."""

    id: str
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    error_type: str | None = None  # the nimflow.llm error class name, e.g. "ContextLengthError"

    @property
    def ok(self) -> bool:
        return self.error is None


def messages_for(prompt: Prompt, system: str | None = None) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system is not None and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


async def complete(
    ctx: ActorContext,
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    item_id: str | None = None,
    **params: Any,
) -> ChatCompletion:
    """One chat completion; openai errors become nimflow.llm errors naming the item."""
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
                who = f"item {item_id!r}" if item_id is not None else "model call"
                raise ModelCallError(
                    f"{who}: the model server of actor {ctx.name!r} sent a malformed response "
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


async def chat(
    prompt: Prompt,
    *,
    system: str | None = None,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.0,
    item_id: str | None = None,
    ctx: ActorContext | None = None,
    **params: Any,
) -> str:
    """The answer's text for one prompt; raises a nimflow.llm error (naming `item_id`) on failure."""
    ctx = ctx or current_actor()
    resp = await complete(
        ctx,
        messages_for(prompt, system),
        model=model,
        item_id=item_id,
        max_tokens=max_tokens,
        temperature=temperature,
        **params,
    )
    return resp.choices[0].message.content or "" if resp.choices else ""


async def chat_many(
    prompts: Sequence[Prompt],
    *,
    system: str | None = None,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.0,
    concurrency: int | None = None,
    ids: Sequence[str] | None = None,
    ctx: ActorContext | None = None,
    **params: Any,
) -> list[ChatResult]:
    """Answers for `prompts` in their order; one item's failure is kept in its result, never raised.

    `concurrency` defaults to what the actor's replicas take at once (their in-flight caps).
    """
    ctx = ctx or current_actor()
    if ids is None:
        ids = [str(i) for i in range(len(prompts))]
    elif len(ids) != len(prompts):
        raise ValueError(f"chat_many got {len(prompts)} prompts but {len(ids)} ids")
    limit = concurrency or ctx.capacity
    limiter = anyio.CapacityLimiter(max(1, limit))
    results: list[ChatResult | None] = [None] * len(prompts)

    async def one(i: int) -> None:
        item_id = ids[i]
        async with limiter:
            try:
                resp = await complete(
                    ctx,
                    messages_for(prompts[i], system),
                    model=model,
                    item_id=item_id,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    **params,
                )
            except Exception as exc:
                results[i] = ChatResult(id=item_id, text=None, error=str(exc), error_type=type(exc).__name__)
                return
        choice = resp.choices[0] if resp.choices else None
        usage = (
            TokenUsage(resp.usage.prompt_tokens, resp.usage.completion_tokens)
            if resp.usage is not None
            else None
        )
        results[i] = ChatResult(
            id=item_id,
            text=(choice.message.content or "") if choice is not None else "",
            finish_reason=choice.finish_reason if choice is not None else None,
            usage=usage,
        )

    async with anyio.create_task_group() as tg:
        for i in range(len(prompts)):
            tg.start_soon(one, i)
    return [r for r in results if r is not None]
