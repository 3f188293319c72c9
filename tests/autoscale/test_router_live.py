"""The router's live replica set: what the autoscaler relies on."""

from __future__ import annotations

import anyio

from nimflow._exceptions import ActorError
from nimflow.actors import janitor
from nimflow.actors.scaler import server_waiting
from nimflow.llm.router import Router


def test_a_replica_added_live_takes_the_queued_requests_and_busy_ones_are_never_retired() -> None:
    async def main() -> None:
        router = Router(["http://a/v1"], max_in_flight=1, max_replicas=3)
        first = await router.acquire()
        assert router.backlog == 0
        got = []

        async def wait_for_slot() -> None:
            got.append(await router.acquire(wait_limit=5))

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_slot)
            await anyio.sleep(0.05)
            assert router.backlog == 1  # every replica at its cap: the request waits
            assert not router.retire(first)  # never with a request in flight
            added = router.add(1, "http://b/v1")
        assert got == [added] and router.backlog == 0
        router.release(first)
        assert router.retire(first) and [r.url for r in router.replicas] == ["http://b/v1"]
        # Light load packs on the first replica of an autoscaled set, so the others go idle.
        router.add(2, "http://c/v1")
        router.release(added)
        picks = []
        for _ in range(4):
            replica = await router.acquire()
            picks.append(replica.url)
            router.release(replica)
        assert picks == ["http://b/v1"] * 4

    anyio.run(main)


def test_an_empty_autoscaled_router_queues_until_a_replica_comes_or_none_can() -> None:
    async def main() -> None:
        router = Router([], max_in_flight=2, max_replicas=2)
        failed: list[BaseException] = []

        async def ask() -> None:
            try:
                await router.acquire(wait_limit=5)
            except ActorError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            await anyio.sleep(0.05)
            assert router.backlog == 1
            router.fail_waiting(ActorError("no replica could be started"))
        assert len(failed) == 1 and router.backlog == 0

    anyio.run(main)


def test_server_reported_waiting_is_read_from_prometheus_text() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m"} 7.0\n'
        'vllm:num_requests_running{model_name="m"} 4.0\n'
    )
    assert server_waiting(text) == 7 and server_waiting("") == 0


def test_the_janitor_keeps_the_first_min_replicas_for_the_ttl_and_extras_for_scaledown() -> None:
    from nimflow._store import ActorReplica

    def row(actor: str, i: int, low: int, high: int) -> ActorReplica:
        return ActorReplica(
            id=f"{actor}/{i}", actor=actor, replica=i, kind="process", handle="h", base_url="u",
            config_hash="c", model="m", ttl_seconds=900, min_replicas=low, max_replicas=high,
            scaledown_seconds=60,
        )  # fmt: skip

    rows = [row("a", 0, 1, 4), row("a", 2, 1, 4), row("a", 3, 1, 4), row("f", 0, 2, 2), row("f", 1, 2, 2)]
    assert janitor._warm_seconds(rows) == {"a/0": 900, "a/2": 60, "a/3": 60, "f/0": 900, "f/1": 900}
