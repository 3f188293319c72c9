"""Per-task counts of model calls: requests, retries, tokens, errors.

The runner wraps each actor-task call in `meter()` and stores the counts on the task-run row. The
transport records into whatever meter is current, so raw `ctx.client` calls are counted too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["Usage", "current_usage", "meter", "parse_usage"]


@dataclass
class Usage:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    # An enclosing meter also sees these counts (a workflow-wide meter around task meters).
    parent: Usage | None = field(default=None, repr=False, compare=False)
    # Sync clients may be used from several worker threads of one task.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(
        self,
        *,
        requests: int = 0,
        retries: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        errors: int = 0,
    ) -> None:
        u: Usage | None = self
        while u is not None:
            with u._lock:
                u.requests += requests
                u.retries += retries
                u.prompt_tokens += prompt_tokens
                u.completion_tokens += completion_tokens
                u.errors += errors
            u = u.parent

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "errors": self.errors,
        }


_current: ContextVar[Usage | None] = ContextVar("nimflow_llm_usage", default=None)


def current_usage() -> Usage | None:
    """The innermost active meter, or None outside any `meter()`."""
    return _current.get()


@contextmanager
def meter() -> Iterator[Usage]:
    """Count the model calls made inside the block (and in threads started from it with anyio)."""
    usage = Usage(parent=_current.get())
    token = _current.set(usage)
    try:
        yield usage
    finally:
        _current.reset(token)


_USAGE_KEY = b'"usage"'
_decoder = json.JSONDecoder()


def parse_usage(body: bytes) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from a JSON body or SSE tail, without parsing the whole body.

    OpenAI-compatible servers put `usage` last, so the last `"usage"` key is found from the end and
    only that object is decoded. A `"usage"` inside generated text is always escaped (`\\"usage\\"`)
    and a string value is never followed by a colon, so the match is a key.
    """
    end = len(body)
    while True:
        at = body.rfind(_USAGE_KEY, 0, end)
        if at < 0:
            return None
        colon = at + len(_USAGE_KEY)
        while colon < len(body) and body[colon] in b" \t\r\n":
            colon += 1
        if colon < len(body) and body[colon] == 0x3A:  # ':'
            break
        end = at
    tail = body[colon + 1 : colon + 1 + 4096].decode("utf-8", "replace").lstrip()
    if not tail.startswith("{"):
        return None  # "usage": null (stream chunks before the last)
    try:
        obj, _ = _decoder.raw_decode(tail)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    prompt, completion = obj.get("prompt_tokens", 0), obj.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion
