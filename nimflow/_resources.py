"""What the engine needs from whatever serves actor tasks, as two small protocols.

The engine core (tasks, graph, runner, cache, store) imports nothing of the actor pool: a task
names its actor through an `ActorRef`, and a run hands the runner a `ResourceSession`. The actor
pool (`nimflow.actors`) implements both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

__all__ = ["ActorRef", "ResourceSession", "TaskResources", "UsageCounts"]


@runtime_checkable
class ActorRef(Protocol):
    """What an actor task declares: the name of the actor that serves it."""

    @property
    def name(self) -> str: ...


class UsageCounts(Protocol):
    """What one task call's model requests used, for its task-run row."""

    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int


class TaskResources(Protocol):
    """An acquired actor, as the runner sees it."""

    def scope(self) -> AbstractContextManager[UsageCounts]:
        """Entered around each attempt of a task call, in the thread or task that runs it: gives
        the call its context (`nf.current_actor()`) and meters its model requests."""
        ...


class ResourceSession(Protocol):
    """The actors of one run: acquired once, on first need, released when the run ends."""

    async def identity(self, actor: ActorRef) -> str:
        """What answers this actor's requests (model, adapter, image digest), for cache keys;
        never where it listens. Starts nothing."""
        ...

    async def acquire(self, actor: ActorRef) -> TaskResources:
        """The actor's serving resources, started (or adopted) at most once per run."""
        ...
