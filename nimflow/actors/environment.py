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

__all__ = ["ActorEnvironment"]

# Actor names end up in container names and labels: keep them to what Docker accepts.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_REQUEST_TIMEOUT = 600.0  # generous: a long generation on a busy server


class ActorEnvironment:
    """`replica_count` replicas of `server`, kept warm `ttl_seconds` after last use (0 = stop at the end
    of the run). `max_concurrency` caps the requests in flight per replica (default 256, the batch size
    vLLM and NIM schedule by default: more would only queue inside the server). `request_timeout`
    bounds each model request, in seconds. `placement=nf.Ray(...)` runs the replicas on a Ray
    cluster instead of this machine."""

    def __init__(
        self,
        name: str,
        server: ServerSpec,
        replica_count: int = 1,
        ttl_seconds: float = 900,
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
        if replica_count < 1:
            raise UserInputError(f"actor {name!r}: replica_count must be 1 or more, not {replica_count}.")
        if ttl_seconds < 0:
            raise UserInputError(f"actor {name!r}: ttl_seconds must be 0 or more, not {ttl_seconds}.")
        if max_concurrency is not None and max_concurrency < 1:
            raise UserInputError(f"actor {name!r}: max_concurrency must be 1 or more, not {max_concurrency}.")
        if placement is not None and not isinstance(placement, Ray):
            raise UserInputError(f"actor {name!r}: placement must be nf.Ray(...) or None, not {placement!r}.")
        self.name = name
        self.server = server
        self.replica_count = replica_count
        self.ttl_seconds = float(ttl_seconds)
        if not request_timeout > 0:
            raise UserInputError(
                f"actor {name!r}: request_timeout must be above 0 seconds, not {request_timeout}."
            )
        self.max_concurrency = max_concurrency
        self.request_timeout = float(request_timeout)
        self.placement = placement

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
            f"replica_count={self.replica_count}, ttl_seconds={self.ttl_seconds:g})"
        )
