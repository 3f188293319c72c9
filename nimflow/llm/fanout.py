"""The ordered fan-out behind `chat_many` and `extract_many`: every item run, results in input order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from nimflow._exceptions import UserInputError

__all__ = ["fan_out", "item_ids"]

T = TypeVar("T")


def item_ids(what: str, count: int, ids: Sequence[str] | None) -> list[str]:
    """`ids` checked against the number of inputs, or "0", "1", ... when none are given."""
    if ids is None:
        return [str(i) for i in range(count)]
    if len(ids) != count:
        raise UserInputError(
            f"{what} got {count} inputs but {len(ids)} ids; pass one id per input (or none, to number them)."
        )
    return list(ids)


async def fan_out(count: int, one: Callable[[int], Awaitable[T]], concurrency: int) -> list[T]:
    """`one(i)` for every i < count, at most `concurrency` at once; its results in order of i.

    `one` must not raise: it keeps its item's failure in its result (an escaping exception would
    cancel the other items).
    """
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    results: list[T | None] = [None] * count

    async def run(i: int) -> None:
        async with limiter:
            results[i] = await one(i)

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(run, i)
    return [r for r in results if r is not None]
