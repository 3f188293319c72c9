"""What the container tests share: a run of an ActorSession, and the containers of an actor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from nimflow._store import Store
from nimflow.actors.pool import ActorSession

T = TypeVar("T")


def in_session(fn: Callable[[ActorSession], Awaitable[T]]) -> T:
    async def main() -> T:
        store = Store.open()
        try:
            async with ActorSession(store) as session:
                return await fn(session)
        finally:
            store.close()

    return anyio.run(main)


def containers(client: Any, actor: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": [f"nimflow.actor={actor}"]}))
