"""The session's shape: the engine's protocol, background work in its task group, one public surface."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import anyio
import pytest

import nimflow
from nimflow._store import Store
from nimflow.actors import janitor, pool, records
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.launchers.process import ProcessLauncher
from nimflow.actors.pool import ActorSession
from nimflow.actors.servers import LocalProcess

MODEL = "fake-model"
FAKE = f"{sys.executable} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model {MODEL}"


def test_nimflow_actors_exports_no_internals() -> None:
    import nimflow.actors

    for name in ("ActorSession", "parse_server_override", "FakeOpenAI", "ServerSpec"):
        assert not hasattr(nimflow.actors, name), name
    assert nimflow.NIM.__module__ == "nimflow.actors.servers"
    assert nimflow.ActorEnvironment.__module__ == "nimflow.actors.environment"
    assert nimflow.OpenAIEndpoint(base_url="http://127.0.0.1:9/v1").kind == "endpoint"


def test_acquire_gives_a_scope_that_meters_and_heartbeats_run_in_the_task_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool, "HEARTBEAT_SECONDS", 0.05)
    env = ActorEnvironment("beat", LocalProcess(command=FAKE, model=MODEL, startup_timeout=30), ttl_seconds=0)

    async def main() -> tuple[int, float, float, list[str]]:
        store = Store.open()
        try:
            async with ActorSession(store, {}) as session:
                resources = await session.acquire(env)
                with resources.scope() as usage:
                    llm = nimflow.current_actor()
                    await llm.client.chat.completions.create(
                        model=llm.model, messages=[{"role": "user", "content": "One. Two."}]
                    )
                threads = [t.name for t in threading.enumerate()]
                (first,) = await anyio.to_thread.run_sync(records.list_replicas, store)
                deadline = time.monotonic() + 10
                later = first.last_used
                while later == first.last_used and time.monotonic() < deadline:
                    await anyio.sleep(0.05)
                    (row,) = await anyio.to_thread.run_sync(records.list_replicas, store)
                    later = row.last_used
                return usage.requests, first.last_used, later, threads
        finally:
            store.close()

    requests, first, later, threads = anyio.run(main)
    assert requests == 1
    assert later > first  # the heartbeat moved last_used forward while the session was open
    assert not any("heartbeat" in name for name in threads)  # a task of the group, not a thread
    assert ProcessLauncher().find("beat") == []


def test_two_actor_environments_with_one_name_are_refused() -> None:
    from nimflow._exceptions import UserInputError

    one = ActorEnvironment("same", LocalProcess(command=FAKE, model="a"))
    two = ActorEnvironment("same", LocalProcess(command=FAKE, model="b"))

    async def main() -> None:
        store = Store.open()
        try:
            async with ActorSession(store) as session:
                await session.identity(one)
                with pytest.raises(UserInputError, match="its own name"):
                    await session.identity(two)
        finally:
            store.close()

    anyio.run(main)


def test_a_killed_replica_is_restarted_by_a_task_of_the_session_and_the_request_answered() -> None:
    env = ActorEnvironment(
        "phoenix", LocalProcess(command=FAKE, model=MODEL, startup_timeout=30), ttl_seconds=0
    )

    async def main() -> tuple[str, str, str, str, str]:
        store = Store.open()
        try:
            async with ActorSession(store, {}) as session:
                ctx = await session.context_for(env)
                (before,) = ProcessLauncher().find("phoenix")
                os.killpg(int(before.handle.split("@")[0]), signal.SIGKILL)  # the server and its wrapper
                with anyio.fail_after(60):
                    for _ in range(400):  # until the process is gone (at most 20 s)
                        if not ProcessLauncher().status(before).running:
                            break
                        await anyio.sleep(0.05)
                    # The janitor may look first: a dead replica of a live run stays the run's to restart.
                    await anyio.to_thread.run_sync(janitor.sweep, store)
                    reply = await ctx.client.chat.completions.create(
                        model=ctx.model, messages=[{"role": "user", "content": "Still there. Yes."}]
                    )
                (after,) = ProcessLauncher().find("phoenix")
                return (
                    before.handle,
                    after.handle,
                    before.base_url,
                    ctx.replica_urls[0],
                    reply.choices[0].message.content or "",
                )
        finally:
            store.close()

    old, new, old_url, url, answer = anyio.run(main)
    assert new != old  # a new process, started by the session's restart task
    assert url == old_url  # on the same port: the routing keeps its URL
    assert answer
    assert ProcessLauncher().find("phoenix") == []
