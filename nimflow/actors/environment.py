"""ActorEnvironment: a named pool of model server replicas that actor tasks send requests to."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar, Unpack, overload

from nimflow._exceptions import UserInputError
from nimflow._task import TaskOptions, TaskSpec, task
from nimflow.actors.launchers.ray import Ray
from nimflow.actors.servers import ServerSpec

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["ActorEnvironment", "replica_bounds"]

# Actor names end up in container names and labels: keep them to what Docker accepts.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_REQUEST_TIMEOUT = 600.0  # generous: a long generation on a busy server


def replica_bounds(value: object, where: str) -> tuple[int, int]:
    """`replica_count` as (min, max): an int N is (N, N); (0, N) starts nothing until a request needs it."""
    if isinstance(value, bool):
        value = None  # True is not a count
    if isinstance(value, int):
        low = high = value
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
    else:
        raise UserInputError(
            f"{where}: replica_count is {value!r}; give a number of replicas (e.g. 2) or bounds "
            "(min, max) to scale between them, e.g. (1, 4)."
        )
    if high < 1 or low < 0 or low > high:
        raise UserInputError(
            f"{where}: replica_count {value!r} is not valid: at least 1 replica, or (min, max) with "
            "0 <= min <= max and max >= 1, e.g. (1, 4)."
        )
    return low, high


class ActorEnvironment:
    """`replica_count` replicas of `server`, kept warm `ttl_seconds` after last use (0 = stop at the end
    of the run). `replica_count=(min, max)` scales between the bounds: replicas start while requests
    wait for one (up to max and the free GPUs), and one idle for `scaledown_seconds` stops (never
    below min; the last min stay warm for `ttl_seconds`). `max_concurrency` caps the requests in flight per replica (default 256, the batch size
    vLLM and NIM schedule by default: more would only queue inside the server). `request_timeout`
    bounds each model request, in seconds. `placement=nf.Ray(...)` runs the replicas on a Ray
    cluster instead of this machine."""

    def __init__(
        self,
        name: str,
        server: ServerSpec,
        replica_count: int | tuple[int, int] = 1,
        ttl_seconds: float = 900,
        scaledown_seconds: float = 60,
        max_concurrency: int | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        placement: Ray | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise UserInputError(
                f"actor name {name!r} is not valid: use letters, digits, '-', '_' or '.', starting with a "
                "letter or digit (at most 63 characters), e.g. 'nim-actor'."
            )
        if not isinstance(server, ServerSpec):
            raise UserInputError(
                f"actor {name!r}: server must be nf.NIM, nf.VLLM, nf.Container, nf.OpenAIEndpoint or nf.LocalProcess, "
                f"not {type(server).__name__}."
            )
        self.min_replicas, self.max_replicas = replica_bounds(replica_count, f"actor {name!r}")
        if not scaledown_seconds > 0:
            raise UserInputError(
                f"actor {name!r}: scaledown_seconds must be above 0, not {scaledown_seconds}."
            )
        if ttl_seconds < 0:
            raise UserInputError(f"actor {name!r}: ttl_seconds must be 0 or more, not {ttl_seconds}.")
        if max_concurrency is not None and max_concurrency < 1:
            raise UserInputError(f"actor {name!r}: max_concurrency must be 1 or more, not {max_concurrency}.")
        if placement is not None and not isinstance(placement, Ray):
            raise UserInputError(f"actor {name!r}: placement must be nf.Ray(...) or None, not {placement!r}.")
        self.name = name
        self.server = server
        self.ttl_seconds = float(ttl_seconds)
        self.scaledown_seconds = float(scaledown_seconds)
        if not request_timeout > 0:
            raise UserInputError(
                f"actor {name!r}: request_timeout must be above 0 seconds, not {request_timeout}."
            )
        self.max_concurrency = max_concurrency
        self.request_timeout = float(request_timeout)
        self.placement = placement

    @property
    def replica_count(self) -> int:
        """The most replicas the actor runs (what a plan must make room for)."""
        return self.max_replicas

    @property
    def scales(self) -> bool:
        return self.min_replicas != self.max_replicas

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskSpec[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, **options: Unpack[TaskOptions]
    ) -> Callable[[Callable[P, R]], TaskSpec[P, R]]: ...

    def task(
        self, fn: Callable[P, R] | None = None, /, **options: Unpack[TaskOptions]
    ) -> TaskSpec[P, R] | Callable[[Callable[P, R]], TaskSpec[P, R]]:
        """Like `nf.task`, for tasks that call this actor's server through `nf.current_actor()`."""
        decorate: Callable[[Callable[P, R]], TaskSpec[P, R]] = task(actor=self, **options)
        return decorate(fn) if fn is not None else decorate

    def __repr__(self) -> str:
        return (
            f"ActorEnvironment(name={self.name!r}, server={self.server!r}, "
            f"replica_count={self._count_text()}, ttl_seconds={self.ttl_seconds:g})"
        )

    def _count_text(self) -> str:
        return f"({self.min_replicas}, {self.max_replicas})" if self.scales else str(self.max_replicas)
