"""Concurrent chat completions over an actor: `chat_many` (ordered, per-item errors kept)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nimflow.llm.calls import complete
from nimflow.llm.context import ActorContext, current_actor
from nimflow.llm.fanout import fan_out, item_ids

__all__ = ["ChatResult", "TokenUsage", "chat", "chat_many", "messages_for"]

Prompt = str | Sequence[Mapping[str, Any]]


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
    return resp.content or ""


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
    names = item_ids("chat_many", len(prompts), ids)

    async def one(i: int) -> ChatResult:
        item_id = names[i]
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
            return ChatResult(id=item_id, text=None, error=str(exc), error_type=type(exc).__name__)
        return ChatResult(
            id=item_id,
            text=resp.content or "",
            finish_reason=resp.finish_reason,
            usage=TokenUsage(*resp.usage) if resp.usage is not None else None,
        )

    return await fan_out(len(prompts), one, concurrency or ctx.capacity)
