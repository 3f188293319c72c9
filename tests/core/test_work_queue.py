"""The queue between a map's claims and its workers: the claims ahead wake when the ready items run
low, whether the workers took them (from threads too) or finished them."""

from __future__ import annotations

import anyio

from nimflow._work_queue import WorkQueue


def test_running_low_wakes_when_items_are_taken_though_none_finished() -> None:
    """Slow items: every worker holds one for seconds. The next claim must not wait for the first
    of them to finish (it did, and a cooperating process claimed the rest of the map meanwhile)."""

    async def main() -> bool:
        queue = WorkQueue(low=8)
        queue.put(list(range(32)))
        woke = anyio.Event()

        async def claims_ahead() -> None:
            await queue.running_low()  # 32 ready: waits
            woke.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(claims_ahead)
            await anyio.sleep(0.1)
            # The workers take 30 (in a thread, as sync slices do) and are still running them.
            await anyio.to_thread.run_sync(lambda: [queue.take() for _ in range(30)])
            with anyio.move_on_after(5):
                await woke.wait()
            tg.cancel_scope.cancel()
        return woke.is_set()

    assert anyio.run(main)


def test_running_low_waits_while_enough_are_ready_and_counts_finished_calls() -> None:
    async def main() -> tuple[bool, int]:
        queue = WorkQueue(low=4)
        queue.put(list(range(10)))
        with anyio.move_on_after(0.3) as scope:
            await queue.running_low()
        for _ in range(7):
            queue.take()
            queue.finished_one()
        await queue.running_low()  # 3 ready now: returns
        return scope.cancelled_caught, queue.finished

    assert anyio.run(main) == (True, 7)
