"""Chat-completion posts straight through an actor's routed HTTP client, with the SDK's headers.

The openai client's per-call path (its options copied and validated, headers and URL rebuilt,
the request put together by httpx's merging) was a third of `chat_many`'s CPU per item. For the
clients nimflow builds (a fixed API key, its own retrying transport, no SDK retries) all of that
comes out the same on every call, so it is worked out once, from the client's public
`base_url`, `default_headers` and `auth_headers`. Errors keep the SDK's types: a status error is
the one the client itself would raise, and the transport raises openai's connection errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2
import openai
import orjson

__all__ = ["ChatPoster"]


class ChatPoster:
    """Posts `/chat/completions` bodies for one openai client over its httpx2 client."""

    def __init__(self, client: openai.AsyncOpenAI, http: httpx2.AsyncClient) -> None:
        self._client = client
        self._http = http
        self._url = httpx2.URL(str(client.base_url) + "chat/completions")  # base_url ends in "/"
        self._timeout = http.timeout.as_dict()
        self._headers: httpx2.Headers | None = None

    def _default_headers(self) -> httpx2.Headers:
        # At the first post, not at build: the SDK's headers name the running async library.
        if self._headers is None:
            merged = {**self._client.default_headers, **self._client.auth_headers}
            self._headers = httpx2.Headers({k: v for k, v in merged.items() if isinstance(v, str)})
        return self._headers

    async def post(
        self,
        body: Mapping[str, Any],
        *,
        extra_headers: Mapping[str, Any] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        timeout: float | httpx2.Timeout | None = None,  # noqa: ASYNC109 (the request's, as in create())
    ) -> Any:
        """The response's parsed JSON; openai's exceptions for what fails."""
        headers = self._default_headers()
        if extra_headers:
            headers = headers.copy()
            for key, value in extra_headers.items():
                if isinstance(value, openai.Omit):  # the SDK's way to drop a default header
                    headers.pop(key, None)
                else:
                    headers[key] = str(value)
        request = httpx2.Request(
            "POST",
            self._url.copy_merge_params(dict(extra_query)) if extra_query else self._url,
            headers=headers,
            content=_json_bytes(body),
            extensions={"timeout": self._timeout if timeout is None else httpx2.Timeout(timeout).as_dict()},
        )
        try:
            response = await self._http.send(request)
        except httpx2.TimeoutException as exc:  # what the SDK makes of them, for a client of its own
            raise openai.APITimeoutError(request=request) from exc
        except httpx2.HTTPError as exc:
            raise openai.APIConnectionError(request=request) from exc
        if response.status_code >= 400:
            await response.aread()
            raise self._client._make_status_error_from_response(response)
        return response.json()


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # pydantic models, integers beyond 64 bits: the SDK's own encoder
        from openai._utils._json import openapi_dumps

        return openapi_dumps(body)
