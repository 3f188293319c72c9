"""What a response body becomes on its way up: JSON parsed once, token usage counted off the bytes."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import orjson

from nimflow.llm.usage import Usage, parse_usage

__all__ = ["JSONResponse", "Tail", "expected_json", "record_parsed_tokens", "record_tokens"]

_TAIL_BYTES = 4096  # enough for the last SSE event, which carries `usage`


class Tail:
    """The last few KiB of a stream, where the final SSE event carries the token usage."""

    __slots__ = ("_chunks", "_size", "usage")

    def __init__(self, usage: Usage | None) -> None:
        self.usage = usage
        self._chunks: list[bytes] = []
        self._size = 0

    def keep(self, chunk: bytes) -> None:
        if self.usage is None:
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= _TAIL_BYTES:
            self._size -= len(self._chunks.pop(0))

    def finish(self) -> None:
        record_tokens(self.usage, b"".join(self._chunks))
        self.usage = None


def record_tokens(usage: Usage | None, body: bytes) -> None:
    if usage is None:
        return
    tokens = parse_usage(body)
    if tokens is not None:
        usage.add(prompt_tokens=tokens[0], completion_tokens=tokens[1])


def expected_json(data: bytes, request: httpx2.Request, url: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and json takes (NaN, integers beyond 64 bits)
            parsed = json.loads(data)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict) and ("choices" in parsed or not request.url.path.endswith("completions")):
        return parsed
    snippet = data[:80].decode("utf-8", "replace")
    raise httpx2.DecodingError(
        f"{url} answered 200 with a body that is not a completion's JSON: {snippet!r}", request=request
    )


def record_parsed_tokens(usage: Usage, body: dict[str, Any]) -> None:
    tokens = body.get("usage")
    if isinstance(tokens, dict):
        prompt, completion = tokens.get("prompt_tokens", 0), tokens.get("completion_tokens", 0)
        if isinstance(prompt, int) and isinstance(completion, int):
            usage.add(prompt_tokens=prompt, completion_tokens=completion)


class JSONResponse(httpx2.Response):
    """A response whose JSON body was parsed by the transport; `json()` hands that value out."""

    def __init__(self, parsed: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsed = parsed

    def json(self, **kwargs: Any) -> Any:
        return self._parsed if not kwargs else super().json(**kwargs)
