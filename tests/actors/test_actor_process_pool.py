"""ActorSession with servers run as processes (LocalProcess, the fake server override, endpoints):
start, adoption, replacement, TTL and the janitor, crashes, overrides."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from sqlmodel import select

from nimflow._exceptions import ServerExitedError, UserInputError
from nimflow._store import ActorReplica, Store
from nimflow.actors import janitor
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.launchers.process import ProcessLauncher
from nimflow.actors.overrides import check_overrides
from nimflow.actors.pool import ActorSession
from nimflow.actors.servers import NIM, LocalProcess, NIMSecrets, OpenAIEndpoint

T = TypeVar("T")
MODEL = "fake-model"
FAKE = f"{sys.executable} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model {MODEL}"


def server(**kwargs: Any) -> LocalProcess:
    kwargs.setdefault("startup_timeout", 30)
    return LocalProcess(command=kwargs.pop("command", FAKE), model=MODEL, **kwargs)


def in_session(fn: Callable[[ActorSession], Awaitable[T]], overrides: dict[str, str] | None = None) -> T:
    async def main() -> T:
        store = Store.open()
        try:
            async with ActorSession(store, overrides) as session:
                return await fn(session)
        finally:
            store.close()

    return anyio.run(main)


def rows() -> list[ActorReplica]:
    store = Store.open()
    try:
        with store.session() as session:
            return list(session.exec(select(ActorReplica)))
    finally:
        store.close()


@pytest.fixture(autouse=True)
def stop_everything(home: Path) -> Iterator[None]:
    yield
    launcher = ProcessLauncher()
    for info in launcher.find():
        launcher.stop(info)
    deadline = time.monotonic() + 15  # the janitor exits once nothing is left
    while time.monotonic() < deadline and janitor.is_running():
        time.sleep(0.1)


async def ask(
    session: ActorSession, env: ActorEnvironment, text: str = "Hello there. Bye."
) -> tuple[str, Any]:
    ctx = await session.context_for(env)
    reply = await ctx.client.chat.completions.create(
        model=ctx.model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or "", ctx


def test_local_process_start_answer_and_stop_at_ttl_zero() -> None:
    env = ActorEnvironment("proc", server(), replica_count=2, ttl_seconds=0)

    async def use(session: ActorSession) -> tuple[str, list[str]]:
        answer, ctx = await ask(session, env)
        assert len(ProcessLauncher().find("proc")) == 2
        return answer, ctx.replica_urls

    answer, urls = in_session(use)
    assert answer == "Hello there. Bye."
    assert len(set(urls)) == 2
    assert ProcessLauncher().find("proc") == []
    assert rows() == []


def test_a_second_process_adopts_a_warm_local_process() -> None:
    env = ActorEnvironment("warm", server(), ttl_seconds=60)
    _, ctx = in_session(lambda s: ask(s, env))
    (before,) = ProcessLauncher().find("warm")
    assert before.running
    (row,) = rows()
    assert row.status == "idle" and row.kind == "process"
    script = (
        "import anyio, json, sys\n"
        "from nimflow._store import Store\n"
        "from nimflow.actors.environment import ActorEnvironment\nfrom nimflow.actors.pool import ActorSession\nfrom nimflow.actors.servers import LocalProcess\n"
        "async def main():\n"
        f"    env = ActorEnvironment('warm', LocalProcess(command={FAKE!r}, model={MODEL!r}), ttl_seconds=60)\n"
        "    async with ActorSession(Store.open()) as s:\n"
        "        ctx = await s.context_for(env)\n"
        "        print(json.dumps({'urls': ctx.replica_urls, 'by': s.served_by()['warm']}))\n"
        "anyio.run(main)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["urls"] == ctx.replica_urls
    assert "already running" in result["by"]
    (after,) = ProcessLauncher().find("warm")
    assert after.handle == before.handle


def test_changed_config_replaces_and_the_janitor_stops_after_ttl() -> None:
    first = ActorEnvironment("ttl", server(), ttl_seconds=60)
    in_session(lambda s: ask(s, first))
    (old,) = ProcessLauncher().find("ttl")
    changed = ActorEnvironment("ttl", server(command=FAKE + " --seed 7"), ttl_seconds=1)
    in_session(lambda s: ask(s, changed))
    (new,) = ProcessLauncher().find("ttl")
    assert new.handle != old.handle and new.config_hash == changed.server.config_hash()
    assert not ProcessLauncher().status(old).running
    deadline = time.monotonic() + 20
    while (ProcessLauncher().status(new).running or rows()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ProcessLauncher().status(new).running, "the janitor did not stop the replica after its TTL"
    assert rows() == []


def test_a_crashing_process_reports_its_exit_code_and_log() -> None:
    crash = f"{sys.executable} -c \"import sys; print('model weights not found'); sys.exit(5)\""
    env = ActorEnvironment("crash", server(command=crash, startup_timeout=60), ttl_seconds=60)
    started = time.monotonic()
    with pytest.raises(ServerExitedError) as info:
        in_session(lambda s: ask(s, env))
    assert time.monotonic() - started < 20
    assert info.value.exit_code == 5
    assert "model weights not found" in str(info.value) and "'crash'" in str(info.value)
    assert ProcessLauncher().find("crash") == [] and rows() == []


def test_concurrent_callers_share_one_acquisition() -> None:
    env = ActorEnvironment("many", server(), ttl_seconds=0)

    async def use(session: ActorSession) -> int:
        contexts = []

        async def get() -> None:
            contexts.append(await session.context_for(env))

        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(get)
        assert all(c is contexts[0] for c in contexts)
        return len(ProcessLauncher().find("many"))

    assert in_session(use) == 1


def test_fake_override_serves_a_nim_actor_for_one_run() -> None:
    nim = NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", secrets=NIMSecrets(None, None))
    env = ActorEnvironment("nim-actor", nim, ttl_seconds=900)

    async def use(session: ActorSession) -> tuple[str, str, str]:
        assert await session.identity(env) == "fake:meta/llama3-8b-instruct:"
        answer, ctx = await ask(session, env)
        return answer, ctx.model, session.served_by()["nim-actor"]

    answer, model, served_by = in_session(use, overrides={"nim-actor": "fake"})
    assert answer == "Hello there. Bye."
    assert model == "meta/llama3-8b-instruct"
    assert "fake server (answers are not from a model)" in served_by
    assert ProcessLauncher().find("nim-actor") == []  # started for this run only, despite the TTL
    assert rows() == []


def test_endpoint_override_and_identity_without_starting_anything() -> None:
    from nimflow.testing import FakeServer

    nim = NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", model="m")
    env = ActorEnvironment("nim-actor", nim)
    with FakeServer(model="m") as fake:
        overrides = {"nim-actor": f"endpoint:{fake.base_url}"}

        async def use(session: ActorSession) -> tuple[str, str]:
            identity = await session.identity(env)
            assert rows() == []  # identity started nothing
            answer, _ = await ask(session, env)
            return identity, answer

        identity, answer = in_session(use, overrides)
    assert identity == "endpoint:m"  # what answers, not where it listens
    assert answer == "Hello there. Bye."


def test_endpoint_with_wrong_model_is_a_clear_error() -> None:
    from nimflow._exceptions import ModelNotServedError
    from nimflow.testing import FakeServer

    with FakeServer(model="served") as fake:
        env = ActorEnvironment("ep", OpenAIEndpoint(base_url=fake.base_url, model="other"))
        with pytest.raises(ModelNotServedError, match=r"does not serve \['other'\]"):
            in_session(lambda s: ask(s, env))


def test_an_override_for_an_unknown_actor_lists_the_used_ones() -> None:
    env = ActorEnvironment("nim-actor", server())
    with pytest.raises(UserInputError, match="its actors: nim-actor"):
        check_overrides({"vllm-actor": "fake"}, [env])


def test_janitor_expiry_rules() -> None:
    assert janitor.expires_at(100.0, 5.0, "idle") == 105.0
    # In use: the run heartbeats; a killed run's replicas still go after the grace period.
    assert janitor.expires_at(100.0, 0.0, "in_use") == 100.0 + janitor.IN_USE_GRACE_SECONDS
    assert janitor.expires_at(100.0, 900.0, "in_use") == 1000.0


def test_actors_ls_and_stop_from_the_cli() -> None:
    from typer.testing import CliRunner

    from nimflow.actors.cli import actors_app

    env = ActorEnvironment("listed", server(), ttl_seconds=600)
    in_session(lambda s: ask(s, env))
    (info,) = ProcessLauncher().find("listed")
    runner = CliRunner()
    result = runner.invoke(actors_app, ["ls"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "listed" in result.output and info.handle.split("@")[0] in result.output
    assert info.base_url in result.output and "9m" in result.output  # expires in ~10 minutes
    result = runner.invoke(actors_app, ["stop", "--all"])
    assert result.exit_code == 0 and "stopped listed/0" in result.output
    assert ProcessLauncher().find("listed") == [] and rows() == []
