"""One actor of a session: its resolved server, launcher and replicas, and what a task gets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from nimflow._resources import UsageCounts
from nimflow.actors import records
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.launchers.base import Launcher, ReplicaInfo
from nimflow.actors.overrides import ActorOverride, replica_bounds_of
from nimflow.actors.placement import assign_gpus
from nimflow.actors.servers import ServerSpec

if TYPE_CHECKING:
    from nimflow._store import Store
    from nimflow.actors.scaler import Scaler
    from nimflow.llm.context import ActorContext

__all__ = ["ActorResources", "ActorState"]


@dataclass(frozen=True)
class ActorResources:
    """An acquired actor as the runner sees it (nimflow._resources.TaskResources)."""

    context: ActorContext

    @contextlib.contextmanager
    def scope(self) -> Iterator[UsageCounts]:
        """Around each attempt: `nf.current_actor()` answers, and its model calls are metered."""
        from nimflow.llm.context import use_actor
        from nimflow.llm.usage import meter

        with use_actor(self.context), meter() as usage:
            yield usage


@dataclass(eq=False)
class ActorState:
    env: ActorEnvironment
    spec: ServerSpec
    launcher: Launcher
    override: ActorOverride | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    resources: ActorResources | None = None
    error: BaseException | None = None
    replicas: dict[int, ReplicaInfo] = field(default_factory=dict)
    adopted: int = 0
    restarts: dict[int, int] = field(default_factory=dict)
    restart_locks: dict[int, anyio.Lock] = field(default_factory=dict)
    model: str = ""
    identity: str | None = None
    scaler: Scaler | None = None
    demand: int = 0  # tasks waiting in acquire()
    first: list[int] = field(default_factory=list)  # the replicas the acquisition waited for

    @property
    def bounds(self) -> tuple[int, int]:
        """(min, max) replicas: the command line's --replicas, else the pipeline's replica_count."""
        if self.override is not None and self.override.replicas is not None:
            return replica_bounds_of(
                self.override.replicas, f"--replicas {self.env.name}={self.override.replicas}"
            )
        return self.env.min_replicas, self.env.max_replicas

    def gpus_for(self, store: Store, missing: list[int]) -> dict[int, tuple[str, ...]]:
        """GPU ids of this host for the replicas about to start (blocking: reads the database).
        None on Ray, which gives each replica its GPUs on the node it picks."""
        if self.launcher.kind == "ray":
            return {}
        return assign_gpus(store, self.env.name, self.spec, missing, self.replicas)

    @property
    def scales(self) -> bool:
        low, high = self.bounds
        return low != high and self.spec.owned and self.spec.shared

    @property
    def scaledown(self) -> float:
        return self.env.scaledown_seconds

    @property
    def keeps_warm(self) -> bool:
        return self.spec.shared and self.env.ttl_seconds > 0

    @property
    def request_timeout(self) -> float:
        chosen = self.override.request_timeout if self.override else None
        return chosen if chosen is not None else self.env.request_timeout

    def rows(self, only: int | None = None) -> list[records.Replica]:
        ttl = self.env.ttl_seconds if self.spec.shared else 0.0
        return [
            records.Replica(
                info=info,
                model=self.model or info.model,
                ttl=ttl,
                gpus=info.gpus,
                bounds=self.bounds,
                scaledown=self.scaledown,
            )
            for index, info in sorted(self.replicas.items())
            if only is None or index == only
        ]

    def describe(self) -> str:
        """One line for the run summary: the server, replicas, what the command line changed."""
        spec = self.spec
        text = spec.describe()
        if spec.shared:
            low, high = self.bounds
            if low != high:
                text += f", {low} to {high} replicas (autoscaled)"
            else:
                text += f", {high} replica{'s' if high != 1 else ''}"
            if self.adopted:
                text += f" ({self.adopted} already running)"
            if self.launcher.kind == "ray":
                text += " on Ray"
        if self.override and self.override.describe(self.env.name):
            text += f" [{self.override.describe(self.env.name)}]"
        return text
