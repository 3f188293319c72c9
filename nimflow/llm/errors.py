"""The messages of failed model calls: each names the item (or "model call"), the actor and its URLs,
and says what to do next. Pure functions of what is known about the failure; no I/O here (the caller
gathers what a message needs, e.g. the models a server offers). Every message goes through
nimflow._redact.redact, so neither an API key (quoted back by a server or not) nor userinfo in a URL
appears in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx2

from nimflow._exceptions import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    EndpointUnreachableError,
    MalformedResponseError,
    ModelCallError,
    ModelNotServedError,
)
from nimflow._redact import redact
from nimflow.llm.context import call_item

if TYPE_CHECKING:
    import openai  # imported where an error is wrapped: a run whose calls all succeed never needs it

__all__ = [
    "TransportFailures",
    "actor_down",
    "from_status",
    "malformed",
    "server_message",
    "timed_out",
    "unreachable",
    "who",
]


_CONTEXT_HINTS = (
    "context length",
    "context window",
    "maximum context",
    "max_model_len",
    "max model len",
    "too long",
    "too many tokens",
    "exceeds the maximum",
    "maximum input length",
)


def who(item_id: str | None) -> str:
    return f"item {item_id!r}" if item_id is not None else "model call"


def server_message(exc: openai.APIStatusError) -> str:
    """The `error.message` (or `detail`) of an OpenAI-style error body, else the raw text, trimmed."""
    body = exc.body
    msg: object = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None:
            msg = body.get("detail") or body.get("message")
    if msg is None:
        try:
            msg = exc.response.text
        except Exception:
            msg = ""
    text = msg if isinstance(msg, str) else json.dumps(msg)
    return text.strip()[:500]


def timed_out(item_id: str | None, actor: str, urls: str, timeout: float | None) -> EndpointUnreachableError:
    within = f"within its request timeout of {timeout:g} s, tried twice" if timeout else "in time"
    return EndpointUnreachableError(
        redact(
            f"{who(item_id)}: the model server of actor {actor!r} ({urls}) did not answer {within}. If its "
            "answers are slow but coming, raise the timeout: nf.ActorEnvironment(..., request_timeout=SECONDS) "
            f"or `nimflow run --request-timeout {actor}=SECONDS`; otherwise check that the server is healthy "
            "and not overloaded (`nimflow actors ls`), or lower the concurrency."
        ),
        item_id=item_id,
    )


def actor_down(item_id: str | None, actor: str, urls: str) -> EndpointUnreachableError:
    return EndpointUnreachableError(
        redact(
            f"{who(item_id)}: actor {actor!r} is down: none of its replicas ({urls}) accepts connections and "
            "restarting them failed, so nimflow stopped sending to it. Finished items are kept: once the "
            "server is back, run the same command again to do the rest."
        ),
        item_id=item_id,
    )


def malformed(item_id: str | None, actor: str, detail: str) -> MalformedResponseError:
    return MalformedResponseError(
        redact(
            f"{who(item_id)}: the model server of actor {actor!r} sent a malformed response, a body that is not "
            f"the JSON asked for, even after retries ({detail}). Check the server's logs, or whatever proxy "
            "sits in front of it (an HTML page is usually a proxy's error page)."
        ),
        item_id=item_id,
    )


def unreachable(item_id: str | None, actor: str, urls: str, detail: str) -> EndpointUnreachableError:
    return EndpointUnreachableError(
        redact(
            f"{who(item_id)}: cannot reach the model server of actor {actor!r} at {urls} ({detail}). Check that "
            "the server is running and listening on that address (`nimflow actors ls`; for an "
            "endpoint you run yourself, check its base URL and port)."
        ),
        item_id=item_id,
    )


def from_status(
    exc: openai.APIStatusError,
    *,
    item_id: str | None,
    actor: str,
    urls: str,
    model: str,
    api_key_name: str | None,
    models: list[str] | None,
) -> ModelCallError:
    """The error for an HTTP error status that stood after retries; `models` is what /v1/models offers."""
    name = who(item_id)
    status = exc.status_code
    msg = server_message(exc)
    if status in (401, 403):
        where = (
            f"the secret or environment variable {api_key_name}"
            if api_key_name
            else ("the actor's API key secret (nf.Secret / `nimflow secret create NAME`)")
        )
        return AuthenticationError(
            redact(
                f"{name}: the model server of actor {actor!r} ({urls}) rejected the API key (HTTP {status}). "
                f"Set the right key in {where} and run again."
            ),
            item_id=item_id,
            status_code=status,
        )
    if status == 404:
        offer = f" It serves: {', '.join(models)}." if models else " List what it serves with GET /v1/models."
        return ModelNotServedError(
            redact(
                f"{name}: model {model!r} is not served by actor {actor!r} ({urls}): {msg}.{offer} Pass one "
                "of those as model=... (a LoRA adapter is chosen by its name), or add the adapter to the "
                "actor's server."
            ),
            item_id=item_id,
            status_code=status,
        )
    if status in (400, 413, 422) and any(h in msg.lower() for h in _CONTEXT_HINTS):
        return ContextLengthError(
            redact(
                f"{name}: the prompt is too long for model {model!r}; the server said: {msg}. Shorten or split "
                "this item's input, lower max_tokens, or serve the model with a longer context "
                "(e.g. vLLM --max-model-len)."
            ),
            item_id=item_id,
            status_code=status,
        )
    if status in (400, 422):
        return BadRequestError(
            redact(
                f"{name}: the server rejected the request (HTTP {status}): {msg}. Fix the request's "
                "parameters for this model (messages, max_tokens, response_format)."
            ),
            item_id=item_id,
            status_code=status,
        )
    return ModelCallError(
        redact(
            f"{name}: the model server of actor {actor!r} kept failing (HTTP {status}: {msg}) after "
            "retries. It may be overloaded or unhealthy: check its logs and `nimflow actors ls`, or lower "
            "the concurrency."
        ),
        item_id=item_id,
        status_code=status,
    )


class TransportFailures:
    """What a transport error that stood after the retries becomes for whoever made the call.

    A raw client call (`ctx.client`, `ctx.sync_client`) keeps the openai type it would have had
    (APIConnectionError, APITimeoutError) with this message instead of "Connection error.", and the
    nimflow error as its cause; the helpers raise that nimflow error. A malformed body is a
    MalformedResponseError for both (openai has no type for it and lets other exceptions through).
    """

    def __init__(self, actor: str, urls: Callable[[], list[str]], timeout: float) -> None:
        self._actor = actor
        self._urls = urls
        self._timeout = timeout

    def __call__(self, exc: Exception, request: httpx2.Request) -> Exception:
        import openai

        item_id = call_item.get()
        urls = ", ".join(self._urls())
        if isinstance(exc, EndpointUnreachableError):  # the router's circuit breaker is open
            error: ModelCallError = actor_down(item_id, self._actor, urls)
            error.__cause__ = exc
            return error
        if isinstance(exc, httpx2.DecodingError):
            error = malformed(item_id, self._actor, str(exc))
            error.__cause__ = exc
            return error
        if isinstance(exc, httpx2.TimeoutException):
            timeout = None if isinstance(exc, httpx2.PoolTimeout | httpx2.ConnectTimeout) else self._timeout
            return _as_openai(
                openai.APITimeoutError, timed_out(item_id, self._actor, urls, timeout), exc, request
            )
        if isinstance(exc, httpx2.TransportError):
            detail = str(exc) or "connection failed"
            return _as_openai(
                openai.APIConnectionError, unreachable(item_id, self._actor, urls, detail), exc, request
            )
        return exc


def _as_openai(
    kind: type[openai.APIConnectionError], error: ModelCallError, exc: Exception, request: httpx2.Request
) -> openai.APIConnectionError:
    import openai

    wrapped = kind.__new__(kind)
    openai.APIConnectionError.__init__(wrapped, message=str(error), request=request)
    error.__cause__ = exc
    wrapped.__cause__ = error
    return wrapped
