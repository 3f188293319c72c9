"""The actor a task is running on: `nf.current_actor()` inside an actor task."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nimflow._exceptions import NoActorError

if TYPE_CHECKING:
    import openai

    from nimflow.llm.poster import ChatPoster
    from nimflow.llm.router import Router

__all__ = ["ActorContext", "OpenAIClients", "call_item", "current_actor", "use_actor"]


class OpenAIClients:
    """An actor's openai clients, built when first asked for: importing openai takes about a
    second, and the helpers (chat, chat_many) post without it."""

    def __init__(self, build: Callable[[], tuple[openai.AsyncOpenAI, openai.OpenAI]]) -> None:
        self._build = build
        self._lock = threading.Lock()  # sync tasks ask from worker threads
        self._built: tuple[openai.AsyncOpenAI, openai.OpenAI] | None = None

    @classmethod
    def of(cls, client: openai.AsyncOpenAI, sync_client: openai.OpenAI) -> OpenAIClients:
        """Clients built by hand (a unit test's context)."""
        return cls(lambda: (client, sync_client))

    def get(self) -> tuple[openai.AsyncOpenAI, openai.OpenAI]:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
        return self._built

    @property
    def built(self) -> bool:
        return self._built is not None


@dataclass
class ActorContext:
    name: str  # actor name, e.g. "nim-actor"
    model: str  # default model; a LoRA adapter is chosen by passing its name as `model`
    base_url: str  # the URL the clients are built on (the first replica's, ending in /v1)
    clients: OpenAIClients = field(repr=False)
    served_by: str  # e.g. "docker:nvcr.io/nim/...:1.0.0" or "fake", shown to users
    # Replica routing state; None for a context built by hand around plain clients (tests).
    router: Router | None = field(default=None, repr=False)
    api_key_name: str | None = None  # the secret / env var holding the key, named in 401 errors
    # The helpers' direct path to `client`'s HTTP client; None for a hand-built context (they
    # then post through the SDK).
    poster: ChatPoster | None = field(default=None, repr=False)

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The actor's AsyncOpenAI client, routed over its replicas."""
        return self.clients.get()[0]

    @property
    def sync_client(self) -> openai.OpenAI:
        """The same for synchronous tasks."""
        return self.clients.get()[1]

    @property
    def replica_urls(self) -> list[str]:
        """Current replica base URLs (a restarted replica may have a new port)."""
        if self.router is None:
            return [self.base_url]
        return [r.url for r in self.router.replicas]

    @property
    def capacity(self) -> int:
        """How many requests the replicas take at once (sum of their in-flight caps); for an actor
        that scales, at its maximum, so that a fan-out makes the backlog that scales it up."""
        if self.router is None:
            return 64
        return self.router.max_in_flight * max(len(self.router.replicas), self.router.max_replicas)


_current: ContextVar[ActorContext | None] = ContextVar("nimflow_actor", default=None)

# The item a helper (chat, chat_many, extract, ...) is calling the model for, so that an error the
# transport raises names it; None for a raw client call.
call_item: ContextVar[str | None] = ContextVar("nimflow_call_item", default=None)


def current_actor() -> ActorContext:
    """The actor serving the running actor task."""
    ctx = _current.get()
    if ctx is None:
        raise NoActorError(
            "nf.current_actor() was called outside an actor task. Call it inside a function decorated "
            "with @actor.task(...) (actor = nf.ActorEnvironment(...)), run through a workflow; in a "
            "unit test, wrap the call in nimflow.llm.use_actor(ctx)."
        )
    return ctx


@contextmanager
def use_actor(ctx: ActorContext) -> Iterator[None]:
    """Make `ctx` the current actor inside the block (and in threads started from it with anyio)."""
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)
