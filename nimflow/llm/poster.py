"""Chat-completion posts straight through an actor's routed HTTP client.

The openai client's per-call path (its options copied and validated, headers and URL rebuilt,
the request put together by httpx's merging) was a third of `chat_many`'s CPU per item, and
importing openai takes about a second of every process's start. For the clients nimflow builds
(a fixed API key, its own retrying transport, no SDK retries) the URL and headers are the same
on every call, so they are worked out once, and openai is only imported when a call fails: a
status error is then the one the actor's openai client itself makes, and the transport raises
openai's connection errors, so the helpers' messages are unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import httpx2
import orjson

from nimflow.llm.context import OpenAIClients

__all__ = ["ChatPoster"]


class ChatPoster:
    """Posts `/chat/completions` bodies over an actor's httpx2 client."""

    def __init__(self, http: httpx2.AsyncClient, base_url: str, api_key: str, clients: OpenAIClients) -> None:
        self._http = http
        self._clients = clients  # for the SDK's status errors
        self._url = httpx2.URL(base_url.rstrip("/") + "/chat/completions")
        self._timeout = http.timeout.as_dict()
        self._headers = httpx2.Headers(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": "nimflow",
                "Authorization": f"Bearer {api_key}",
            }
        )

    async def post(
        self,
        body: Mapping[str, Any],
        *,
        extra_headers: Mapping[str, Any] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        timeout: float | httpx2.Timeout | None = None,  # noqa: ASYNC109 (the request's, as in create())
    ) -> Any:
        """The response's parsed JSON; openai's exceptions for what fails."""
        headers = self._headers
        if extra_headers:
            headers = headers.copy()
            for key, value in extra_headers.items():
                if _is_omit(value):  # the SDK's way to drop a default header
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
        except httpx2.HTTPError as exc:  # not from nimflow's transport: what the SDK makes of them
            import openai

            kind = openai.APITimeoutError if isinstance(exc, httpx2.TimeoutException) else openai.APIConnectionError
            raise kind(request=request) from exc
        if response.status_code >= 400:
            await response.aread()
            client = self._clients.get()[0]
            raise client._make_status_error_from_response(response)
        return response.json()

    async def aclose(self) -> None:
        await self._http.aclose()


def _is_omit(value: object) -> bool:
    openai = sys.modules.get("openai")  # an openai.Omit value means openai is imported already
    return openai is not None and isinstance(value, openai.Omit)


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # pydantic models, integers beyond 64 bits: the SDK's own encoder
        from openai._utils._json import openapi_dumps

        return openapi_dumps(body)
