"""The one retry layer for model calls (tenacity).

It is a transport wrapping the routing transport (httpx's transport style), below the openai
client, and the client is built with `max_retries=0`. Wrapping the transport rather than the helper functions means raw
`ctx.client.chat.completions.create(...)` calls in user tasks get the same policy as `chat_many` and
`extract`, every retry is counted in the task's usage meter whoever made the call, and retries
never stack (SDK x helper x transport). The cost: the transport sees HTTP, not SDK objects, so the
predicate below is written on status codes and transport exceptions, as openai-python's own
`_should_retry` is.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    wait_exponential_jitter,
)

from nimflow.llm.usage import Usage, current_usage

__all__ = [
    "AsyncRetryTransport",
    "RetryPolicy",
    "SyncRetryTransport",
    "parse_retry_after",
    "should_retry",
]

log = logging.getLogger("nimflow.llm")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # first try included
    backoff_initial: float = 0.5  # seconds, doubling per attempt, plus up to as much again of jitter
    backoff_max: float = 20.0
    retry_after_max: float = 60.0  # a longer Retry-After is cut to this
    max_elapsed: float = 600.0  # no new attempt after this long in total
    # Fewer tries for outcomes that cost a lot or rarely change: a request that ran into its timeout
    # is tried once more (a hung server costs an item about twice the timeout, not six times), a
    # 200 with a body that is not the JSON asked for a few times.
    timeout_attempts: int = 2
    malformed_attempts: int = 3


DEFAULT_POLICY = RetryPolicy()


def should_retry_status(status: int) -> bool:
    # 408 request timeout, 409 lock/conflict (vLLM and proxies use it for transient state),
    # 429 rate limited, and any 5xx. Never 400/401/403/404/422: the same request fails the same way.
    return status in (408, 409, 429) or status >= 500


def should_retry_exception(exc: BaseException) -> bool:
    # Timeouts, refused/reset connections, connections dropped before a response, and a 200 whose
    # body is not the JSON asked for (the routing transport raises DecodingError for it). A refused
    # connection is first failed over to another replica by the transport; it reaches this layer
    # only when no replica would take it.
    return isinstance(
        exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError | httpx2.DecodingError
    )


def should_retry(response: httpx2.Response | None = None, exc: BaseException | None = None) -> bool:
    """Whether an attempt's outcome (a response or a transport exception) is worth another try."""
    if exc is not None:
        return should_retry_exception(exc)
    if response is None:
        return False
    # Servers may say it outright (non-standard, honoured by openai-python too).
    hint = response.headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return should_retry_status(response.status_code)


def parse_retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            return value if math.isfinite(value) and value >= 0 else None
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        date = email.utils.parsedate_tz(raw)
        if date is None:
            return None
        return max(0.0, email.utils.mktime_tz(date) - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class _Wait:
    """Retry-After when the server sent one (capped), else jittered exponential backoff."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_exponential_jitter(
            multiplier=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial
        )

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            response: httpx2.Response = outcome.result()
            after = parse_retry_after(response.headers)
            if after is not None:
                return min(after, self._policy.retry_after_max)
        return float(self._backoff(state))


def _describe(state: RetryCallState) -> str:
    outcome = state.outcome
    if outcome is None:
        return "?"
    if outcome.failed:
        exc = outcome.exception()
        return type(exc).__name__ + (f" ({exc})" if str(exc) else "")
    response: httpx2.Response = outcome.result()
    return f"HTTP {response.status_code}"


def _retry_predicate(response: httpx2.Response) -> bool:
    return should_retry(response)


def _count_and_log(request: httpx2.Request, policy: RetryPolicy) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            outcome.result().close()  # bodies of retried responses are already read; free them
        usage = current_usage()
        if usage is not None:
            usage.add(retries=1)
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        # Only method and path: the URL's query or headers could carry secrets.
        log.debug(
            "retrying %s %s after %s (attempt %d of %d) in %.2fs",
            request.method,
            request.url.path,
            _describe(state),
            state.attempt_number + 1,
            policy.max_attempts,
            sleep,
        )

    return before_sleep


def _final(state: RetryCallState) -> httpx2.Response:
    # Out of attempts: hand back the last response (the SDK turns it into its status error) or
    # re-raise the last transport error.
    assert state.outcome is not None
    result: httpx2.Response = state.outcome.result()
    return result


def _replayable(request: httpx2.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises when the body is a one-shot stream
    except httpx2.RequestNotRead:
        return False
    return True


class _Stop:
    """Out of attempts: in all, in time, or for the kind of failure (timeouts, malformed bodies)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._timeouts = 0
        self._malformed = 0

    def __call__(self, state: RetryCallState) -> bool:
        policy = self._policy
        if state.attempt_number >= policy.max_attempts:
            return True
        if (state.seconds_since_start or 0.0) >= policy.max_elapsed:
            return True
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        if isinstance(exc, httpx2.TimeoutException):
            self._timeouts += 1
            return self._timeouts >= policy.timeout_attempts
        if isinstance(exc, httpx2.DecodingError):
            self._malformed += 1
            return self._malformed >= policy.malformed_attempts
        return False


# What a transport error that stood after retries becomes for the caller (errors.TransportFailures).
Explain = Callable[[Exception, httpx2.Request], Exception]


def _keep(exc: Exception, request: httpx2.Request) -> Exception:
    return exc


class _Retries:
    """The core both retry transports share (as httpx's clients share theirs): what is counted,
    whether the first attempt's outcome stands, the policy as tenacity arguments, and the error a
    failure that stands becomes. The shells below only send, awaiting or not."""

    def __init__(self, policy: RetryPolicy, explain: Explain) -> None:
        self.policy = policy
        self._wait = _Wait(policy)
        self._explain = explain

    @staticmethod
    def begin() -> Usage | None:
        """A request starts: counted in the task's meter (whatever the retries)."""
        usage = current_usage()
        if usage is not None:
            usage.add(requests=1)
        return usage

    @staticmethod
    def ended(usage: Usage | None, response: httpx2.Response) -> httpx2.Response:
        if usage is not None and response.status_code >= 400:
            usage.add(errors=1)
        return response

    def failed(self, usage: Usage | None, exc: BaseException, request: httpx2.Request) -> BaseException:
        """The request failed for good: counted, and the error the caller sees (`exc` itself, or
        what `explain` makes of a transport error, chained to it)."""
        if usage is not None:
            usage.add(errors=1)
        return self._explain(exc, request) if isinstance(exc, Exception) else exc

    def stands(self, request: httpx2.Request, outcome: httpx2.Response | BaseException) -> bool:
        """Whether the first attempt's outcome stands (almost always): retries start only when not."""
        if self.policy.max_attempts < 2:
            return True
        if isinstance(outcome, BaseException):
            retry = isinstance(outcome, Exception) and should_retry_exception(outcome)
        else:
            retry = should_retry(outcome)
        return not retry or not _replayable(request)

    def arguments(self, request: httpx2.Request) -> dict[str, Any]:
        policy = self.policy
        return {
            "stop": _Stop(policy),
            "wait": self._wait,
            "retry": retry_if_exception(should_retry_exception) | retry_if_result(_retry_predicate),
            "before_sleep": _count_and_log(request, policy),
            "retry_error_callback": _final,
            "reraise": True,
        }


def _given(outcome: httpx2.Response | BaseException) -> httpx2.Response:
    """The first attempt's outcome when it stands: the response, or its error raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _replay(first: httpx2.Response | BaseException) -> Callable[[], httpx2.Response | None]:
    """Hands tenacity the first attempt's known outcome once, so it is not sent twice."""
    pending = [first]

    def known() -> httpx2.Response | None:
        if not pending:
            return None
        return _given(pending.pop())

    return known


class AsyncRetryTransport(httpx2.AsyncBaseTransport):
    """Retries what is worth another try of what `inner` answers; counts requests and errors; a
    transport error that stands is handed to `explain` for the error the caller sees."""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, policy: RetryPolicy = DEFAULT_POLICY, explain: Explain = _keep
    ) -> None:
        self._inner = inner
        self._retries = _Retries(policy, explain)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        retries = self._retries
        usage = retries.begin()
        try:
            response = await self._send(request)
        except BaseException as exc:
            failure = retries.failed(usage, exc, request)
            if failure is exc:
                raise
            raise failure  # noqa: B904 - `explain` chains the failure to `exc` itself
        return retries.ended(usage, response)

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        send = self._inner.handle_async_request
        first: httpx2.Response | BaseException
        try:
            first = await send(request)
        except Exception as exc:
            first = exc
        if self._retries.stands(request, first):
            return _given(first)
        known = _replay(first)

        async def attempt() -> httpx2.Response:
            response = known()
            return response if response is not None else await send(request)

        result: httpx2.Response = await AsyncRetrying(**self._retries.arguments(request))(attempt)
        return result

    async def aclose(self) -> None:
        await self._inner.aclose()


class SyncRetryTransport(httpx2.BaseTransport):
    """The same retries for the sync client (worker threads)."""

    def __init__(
        self, inner: httpx2.BaseTransport, policy: RetryPolicy = DEFAULT_POLICY, explain: Explain = _keep
    ) -> None:
        self._inner = inner
        self._retries = _Retries(policy, explain)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        retries = self._retries
        usage = retries.begin()
        try:
            response = self._send(request)
        except BaseException as exc:
            failure = retries.failed(usage, exc, request)
            if failure is exc:
                raise
            raise failure  # noqa: B904 - `explain` chains the failure to `exc` itself
        return retries.ended(usage, response)

    def _send(self, request: httpx2.Request) -> httpx2.Response:
        send = self._inner.handle_request
        first: httpx2.Response | BaseException
        try:
            first = send(request)
        except Exception as exc:
            first = exc
        if self._retries.stands(request, first):
            return _given(first)
        known = _replay(first)

        def attempt() -> httpx2.Response:
            response = known()
            return response if response is not None else send(request)

        result: httpx2.Response = Retrying(**self._retries.arguments(request))(attempt)
        return result

    def close(self) -> None:
        self._inner.close()
