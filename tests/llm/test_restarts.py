"""Replica restarts asked for by the router run as tasks of a task group (router.restarts_in)."""

from __future__ import annotations

import threading

import anyio
import pytest
from scripted import echo_server, seen

from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.retry import RetryPolicy
from nimflow.llm.router import Router, restarts_in

FAST = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.05)


@pytest.mark.anyio
async def test_a_sync_request_in_a_worker_thread_gets_its_restart_from_the_group(closed_url: str) -> None:
    replacement = echo_server()
    ran_in: list[int] = []

    async def restart(url: str) -> str | None:
        ran_in.append(threading.get_ident())
        await anyio.sleep(0.1)
        return replacement.base_url

    def ask() -> str:
        r = ctx.sync_client.chat.completions.create(
            model="base-model", messages=[{"role": "user", "content": "from a thread"}]
        )
        return r.choices[0].message.content or ""

    try:
        async with anyio.create_task_group() as group:
            ctx = build_actor_context(
                "test-actor", "base-model", [closed_url], retry_policy=FAST,
                on_replica_down=restarts_in(group, restart),
            )  # fmt: skip
            with anyio.fail_after(30):
                answer = await anyio.to_thread.run_sync(ask)
        assert answer == "echo: from a thread"
        assert ran_in == [threading.get_ident()]  # on the group's event loop, not the worker thread
        assert seen(replacement) == ["from a thread"]
        await close_actor_context(ctx)
    finally:
        replacement.stop()


@pytest.mark.anyio
async def test_a_restart_under_way_ends_with_its_group_and_none_starts_after(closed_url: str) -> None:
    started = anyio.Event()

    async def never_done(url: str) -> str | None:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as group:
        request = restarts_in(group, never_done)
        router = Router([closed_url], max_in_flight=1, on_replica_down=request)
        replica = router.replicas[0]
        router.mark_down(replica, replica.url)
        assert replica.restarting
        with anyio.fail_after(10):
            await started.wait()
        group.cancel_scope.cancel()
    # Cancelled with the group: the replica is no longer waited for, and stays out of rotation.
    assert not replica.restarting and not replica.up

    later = Router([closed_url], max_in_flight=1, on_replica_down=request)
    other = later.replicas[0]
    later.mark_down(other, other.url)  # the group has ended: no restart, nothing left waiting
    assert not other.restarting and not other.up
