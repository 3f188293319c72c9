"""Structured output: `extract(text, Schema)` returns a validated instance or raises ExtractionError.

Invalid output is never returned, so a task built on it never caches a bad answer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic

from nimflow._exceptions import ExtractionError
from nimflow.llm.calls import complete
from nimflow.llm.context import ActorContext, current_actor
from nimflow.llm.fanout import fan_out, item_ids
from nimflow.llm.usage import current_usage

__all__ = ["ExtractResult", "extract", "extract_many", "response_format_for"]

log = logging.getLogger("nimflow.llm")

M = TypeVar("M", bound=pydantic.BaseModel)

DEFAULT_INSTRUCTIONS = (
    "Extract the requested information from the user's text. Answer only with a JSON object that "
    "matches the given schema; use only what the text says."
)


@functools.lru_cache(maxsize=128)
def response_format_for(schema: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A `json_schema` response_format for a pydantic model: strict when the model allows it."""
    from openai.lib._pydantic import to_strict_json_schema  # not at import: a cached run never calls it

    try:
        json_schema, strict = to_strict_json_schema(schema), True
    except Exception:  # shapes strict mode cannot express (open dicts, ...): plain JSON schema
        json_schema, strict = schema.model_json_schema(), False
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__[:64], "schema": json_schema, "strict": strict},
    }


async def extract(
    text: str,
    schema: type[M],
    *,
    instructions: str | None = None,
    model: str | None = None,
    max_tokens: int = 1024,
    max_tokens_limit: int = 8192,
    attempts: int = 3,
    temperature: float = 0.0,
    item_id: str | None = None,
    ctx: ActorContext | None = None,
) -> M:
    """`schema` filled from `text` by the model, validated by pydantic.

    Output cut at max_tokens (finish_reason "length") or that does not parse or validate is asked
    for again with twice the token budget (up to `max_tokens_limit`, `attempts` tries in all); then
    ExtractionError names the item and the problem.
    """
    ctx = ctx or current_actor()
    who = f"item {item_id!r}" if item_id is not None else "extraction"
    messages = [
        {"role": "system", "content": instructions or DEFAULT_INSTRUCTIONS},
        {"role": "user", "content": text},
    ]
    response_format = response_format_for(schema)
    budget = max_tokens
    problem = ""
    for attempt in range(1, attempts + 1):
        resp = await complete(
            ctx,
            messages,
            model=model,
            item_id=item_id,
            max_tokens=budget,
            temperature=temperature,
            response_format=response_format,
        )
        content = resp.content
        if content is None:
            problem = f"the model refused: {resp.refusal}" if resp.refusal else "the answer was empty"
        elif resp.finish_reason == "length":
            problem = f"the output was cut at max_tokens={budget}"
        else:
            try:
                return schema.model_validate_json(content)
            except pydantic.ValidationError as exc:
                problem = f"the output does not match {schema.__name__}: {_summary(exc)}"
        if attempt < attempts:
            budget = min(budget * 2, max_tokens_limit)
            usage = current_usage()
            if usage is not None:
                usage.add(retries=1)
            log.debug("%s: %s; asking again with max_tokens=%d", who, problem, budget)
    raise ExtractionError(
        f"{who}: no valid {schema.__name__} after {attempts} attempts (max_tokens up to {budget}); last "
        f"problem: {problem}. Raise max_tokens (and max_tokens_limit) if the output was cut, simplify the "
        "schema, or check that the model supports json_schema structured output.",
        item_id=item_id,
    )


def _summary(exc: pydantic.ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:3]]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


@dataclass
class ExtractResult(Generic[M]):
    id: str
    value: M | None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def extract_many(
    texts: Sequence[str],
    schema: type[M],
    *,
    instructions: str | None = None,
    model: str | None = None,
    max_tokens: int = 1024,
    concurrency: int | None = None,
    ids: Sequence[str] | None = None,
    ctx: ActorContext | None = None,
) -> list[ExtractResult[M]]:
    """`extract` over many texts, in order; an item that fails keeps its error instead of raising."""
    ctx = ctx or current_actor()
    names = item_ids("extract_many", len(texts), ids)

    async def one(i: int) -> ExtractResult[M]:
        try:
            value = await extract(
                texts[i],
                schema,
                instructions=instructions,
                model=model,
                max_tokens=max_tokens,
                item_id=names[i],
                ctx=ctx,
            )
        except Exception as exc:
            return ExtractResult(names[i], None, str(exc), type(exc).__name__)
        return ExtractResult(names[i], value)

    return await fan_out(len(texts), one, concurrency or ctx.capacity)
