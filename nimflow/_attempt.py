"""One task call's tries: `attempt()` owns retries and timeouts for sync and async tasks alike.

A try runs the function inside its resources' scope (the actor context and the usage meter),
in the thread or task that runs it. A sync task runs in a worker thread: the scheduler runs the
first tries of fast sync items back to back in one thread (`try_sync`, a slice), and `attempt()`
makes whatever tries are left. A sync task with a timeout is tried through `attempt()` only:
a thread cannot be stopped, only abandoned when its deadline passes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from nimflow._exceptions import NimflowError, TaskTimeoutError
from nimflow._resources import TaskResources, UsageCounts
from nimflow._task import TaskSpec

__all__ = ["Call", "Outcome", "attempt", "describe", "details", "settled", "try_sync"]


@dataclass(slots=True)
class Outcome:
    """How a call ended: its value or its error, how many tries it took, what it used."""

    ok: bool = False
    value: Any = None
    attempts: int = 0
    error: BaseException | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float = 0.0
    output_json: str | None = None  # the value as the cache stores it (cached tasks only)
    usage: UsageCounts | None = None

    def failed(self, error: BaseException) -> None:
        self.ok, self.value, self.error, self.output_json = False, None, error, None


@dataclass(slots=True)
class Call:
    """One invocation of a task: its inputs, its resources, and how a returned value is accepted."""

    spec: TaskSpec[..., Any]
    kwargs: dict[str, Any]
    resources: TaskResources | None = None
    # For a cached task: the value as JSON, raising SerializationError when it does not fit the hint
    # (a value that does not serialize fails the try, and is never cached).
    encode: Callable[[Any], str] | None = None

    def scope(self) -> AbstractContextManager[UsageCounts | None]:
        return nullcontext() if self.resources is None else self.resources.scope()


def try_sync(call: Call, outcome: Outcome) -> Outcome:
    """One try of a sync task in the calling thread, its result on `outcome`."""
    try:
        with call.scope() as usage:
            value = call.spec.fn(**call.kwargs)
        _accept(call, outcome, value, usage)
    except Exception as exc:
        outcome.failed(exc)
    return outcome


async def _try_async(call: Call, outcome: Outcome) -> None:
    try:
        with call.scope() as usage:
            value = await call.spec.fn(**call.kwargs)
        _accept(call, outcome, value, usage)
    except Exception as exc:
        outcome.failed(exc)


def _accept(call: Call, outcome: Outcome, value: Any, usage: UsageCounts | None) -> None:
    outcome.output_json = call.encode(value) if call.encode is not None else None
    outcome.ok, outcome.value, outcome.error, outcome.usage = True, value, None, usage


async def attempt(
    call: Call, outcome: Outcome | None = None, limiter: anyio.CapacityLimiter | None = None
) -> Outcome:
    """Try the call until it succeeds or its retries are used up, each try within the timeout.

    `outcome` carries the tries already made (the first try of a sync slice); `limiter` bounds
    the worker threads of sync tries.
    """
    spec = call.spec
    outcome = outcome or Outcome()
    while not settled(call, outcome):
        if outcome.attempts:
            await anyio.sleep(_backoff(outcome.attempts))
        outcome.attempts += 1
        try:
            # No cancel scope without a timeout: entering one costs more than a fast task's call.
            with anyio.fail_after(spec.timeout) if spec.timeout is not None else nullcontext():
                if spec.is_async:
                    await _try_async(call, outcome)
                else:
                    # A try abandoned at its timeout writes to its own scratch outcome, never this one.
                    scratch = await anyio.to_thread.run_sync(
                        try_sync, call, Outcome(), abandon_on_cancel=True, limiter=limiter
                    )
                    outcome.ok, outcome.value, outcome.error = scratch.ok, scratch.value, scratch.error
                    outcome.output_json, outcome.usage = scratch.output_json, scratch.usage
        except TimeoutError as exc:
            error = TaskTimeoutError(
                f"task {spec.name} timed out after {spec.timeout} s (timeout={spec.timeout}); "
                "raise it or split the work."
            )
            error.__cause__ = exc
            outcome.failed(error)
        outcome.ended_at = time.time()
    return outcome


def settled(call: Call, outcome: Outcome) -> bool:
    """Whether the call is done: it succeeded, or it has no retries left."""
    return outcome.ok or outcome.attempts > call.spec.retries


def describe(error: BaseException) -> str:
    """`Type: message`, the whole message (a server's exit code and log tail included)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def details(error: BaseException) -> str:
    """What a task-run row keeps of an error: a nimflow error's message says it all; anything
    else keeps its traceback (which ends with the whole message) for `nimflow show`."""
    if isinstance(error, NimflowError):
        return describe(error)
    return "".join(traceback.format_exception(error))


def _backoff(attempt: int) -> float:
    return float(min(0.1 * 2 ** (attempt - 1), 2.0))
