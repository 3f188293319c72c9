"""The actor pool against a real Docker engine, with the fake server in a locally built image."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from docker_support import containers, in_session

from nimflow._exceptions import (
    GPUUnavailableError,
    ImageNotAvailableError,
    ServerExitedError,
    StartupTimeoutError,
)
from nimflow._store import ActorReplica, Store
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.pool import ActorSession
from nimflow.actors.servers import NIM, VLLM, NIMSecrets

T = TypeVar("T")
MODEL = "meta/llama3-8b-instruct"


def nim(image: str, **kwargs: Any) -> NIM:
    options: dict[str, Any] = dict(
        secrets=NIMSecrets(ngc_api_key=None, hf_token=None), model=MODEL, port=0, gpu=0, mem="256Mi",
        shm_size="64Mi", startup_timeout=30,
    )  # fmt: skip
    options.update(kwargs)
    return NIM(image=image, **options)




def rows() -> list[ActorReplica]:
    from sqlmodel import select

    store = Store.open()
    try:
        with store.session() as session:
            return list(session.exec(select(ActorReplica)))
    finally:
        store.close()


def test_start_health_and_a_real_completion(docker_client: Any, fake_image: str, actor_name: str) -> None:
    env = ActorEnvironment(actor_name, nim(fake_image), ttl_seconds=0)

    async def use(session: ActorSession) -> tuple[str, str, dict[str, str]]:
        digest = docker_client.images.get(fake_image).id
        assert await session.identity(env) == f"nim:{fake_image}:{MODEL}:@{digest}"  # the image's digest
        ctx = await session.context_for(env)
        reply = await ctx.client.chat.completions.create(
            model=ctx.model, messages=[{"role": "user", "content": "The sky is blue. Grass is green."}]
        )
        (container,) = containers(docker_client, actor_name)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert container.attrs["HostConfig"]["Init"] is True
        return ctx.model, reply.choices[0].message.content or "", session.served_by()

    model, answer, served_by = in_session(use)
    assert model == MODEL
    assert "The sky is blue." in answer
    assert fake_image in served_by[actor_name]
    # ttl_seconds=0: stopped and removed at the end of the run, and forgotten.
    assert containers(docker_client, actor_name) == []
    assert [r for r in rows() if r.actor == actor_name] == []


def test_concurrent_calls_start_each_replica_once(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    env = ActorEnvironment(actor_name, nim(fake_image), replica_count=2, ttl_seconds=0)

    async def use(session: ActorSession) -> int:
        contexts: list[Any] = []

        async def call() -> None:
            contexts.append(await session.context_for(env))

        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(call)
        assert all(c is contexts[0] for c in contexts)
        assert len(set(contexts[0].replica_urls)) == 2
        return len(containers(docker_client, actor_name))

    assert in_session(use) == 2


ADOPT = textwrap.dedent(
    """
    import json, sys, anyio
    from nimflow._store import Store
    from nimflow.actors.environment import ActorEnvironment
    from nimflow.actors.pool import ActorSession
    from nimflow.actors.servers import NIM, NIMSecrets

    async def main():
        spec = NIM(image=sys.argv[1], secrets=NIMSecrets(None, None), model=sys.argv[3], port=0, gpu=0,
                   mem="256Mi", shm_size="64Mi", startup_timeout=30)
        env = ActorEnvironment(sys.argv[2], spec, ttl_seconds=60)
        store = Store.open()
        async with ActorSession(store) as session:
            ctx = await session.context_for(env)
            reply = await ctx.client.chat.completions.create(
                model=ctx.model, messages=[{"role": "user", "content": "Adopted. Fine."}])
            print(json.dumps({"urls": ctx.replica_urls, "served_by": session.served_by(),
                              "answer": reply.choices[0].message.content}))
        store.close()

    anyio.run(main)
    """
)


def test_a_second_process_adopts_the_running_container(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    env = ActorEnvironment(actor_name, nim(fake_image), ttl_seconds=60)
    urls = in_session(lambda s: _urls(s, env))
    (first,) = containers(docker_client, actor_name)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", ADOPT, fake_image, actor_name, MODEL],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (second,) = containers(docker_client, actor_name)
    assert second.id == first.id  # nothing started
    assert result["urls"] == urls
    assert "already running" in result["served_by"][actor_name]
    assert result["answer"] == "Adopted. Fine."
    assert time.monotonic() - started < 20


async def _urls(session: ActorSession, env: ActorEnvironment) -> list[str]:
    return list((await session.context_for(env)).replica_urls)


def test_the_janitor_stops_replicas_after_their_ttl(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    env = ActorEnvironment(actor_name, nim(fake_image), ttl_seconds=2)
    in_session(lambda s: _urls(s, env))
    (container,) = containers(docker_client, actor_name)
    container.reload()
    assert container.status == "running"  # kept warm after the run
    (row,) = [r for r in rows() if r.actor == actor_name]
    assert row.status == "idle" and row.ttl_seconds == 2
    deadline = time.monotonic() + 30  # TTL 2 s plus the janitor's polling interval
    while containers(docker_client, actor_name) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert containers(docker_client, actor_name) == [], "the janitor did not stop the replica"
    assert [r for r in rows() if r.actor == actor_name] == []


def test_a_changed_config_replaces_the_replica(docker_client: Any, fake_image: str, actor_name: str) -> None:
    old = ActorEnvironment(actor_name, nim(fake_image, env={"NIMFLOW_FAKE_ARGS": ""}), ttl_seconds=60)
    new = ActorEnvironment(actor_name, nim(fake_image, env={"NIMFLOW_FAKE_ARGS": "--seed 1"}), ttl_seconds=60)
    in_session(lambda s: _urls(s, old))
    (before,) = containers(docker_client, actor_name)
    in_session(lambda s: _urls(s, new))
    (after,) = containers(docker_client, actor_name)
    assert after.id != before.id
    assert after.labels["nimflow.config"] == new.server.config_hash() != old.server.config_hash()


def test_a_crashing_container_fails_at_once_with_exit_code_and_log(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    env = ActorEnvironment(actor_name, nim(fake_image, env={"NIMFLOW_FAKE_CRASH": "3"}, startup_timeout=120))
    started = time.monotonic()
    with pytest.raises(ServerExitedError) as info:
        in_session(lambda s: _urls(s, env))
    assert time.monotonic() - started < 20  # not the startup deadline
    assert info.value.exit_code == 3
    assert "exited with code 3" in str(info.value)
    assert "refusing to start" in str(info.value)
    assert actor_name in str(info.value)
    assert containers(docker_client, actor_name) == []


def test_a_startup_deadline_names_the_actor_and_removes_the_container(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    env = ActorEnvironment(actor_name, nim(fake_image, env={"NIMFLOW_FAKE_SLEEP": "60"}, startup_timeout=1.5))
    with pytest.raises(StartupTimeoutError, match=r"within 1\.5s"):
        in_session(lambda s: _urls(s, env))
    assert containers(docker_client, actor_name) == []


def test_a_missing_image_is_a_clear_error(docker_client: Any, actor_name: str) -> None:
    env = ActorEnvironment(actor_name, nim("nimflow-no-such-image:0", pull=False))
    with pytest.raises(ImageNotAvailableError, match="not on this machine and pulling is off"):
        in_session(lambda s: _urls(s, env))
    assert containers(docker_client, actor_name) == []


def test_an_image_that_cannot_be_pulled_is_a_clear_error(docker_client: Any, actor_name: str) -> None:
    # A registry name that cannot resolve: the pull fails fast and nothing is left behind.
    env = ActorEnvironment(actor_name, nim("nimflow-test.invalid/none/such:1"))
    with pytest.raises(ImageNotAvailableError, match="could not be pulled") as info:
        in_session(lambda s: _urls(s, env))
    assert f"--server {actor_name}=fake" in str(info.value)
    assert containers(docker_client, actor_name) == []


def test_a_gpu_request_without_nvidia_runtime(
    docker_client: Any, fake_image: str, actor_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMFLOW_GPUS", "0")  # placement passes; the engine has no runtime for it
    if any("nvidia" in r for r in docker_client.info().get("Runtimes", {})):
        pytest.skip("this engine has an NVIDIA runtime")
    env = ActorEnvironment(actor_name, nim(fake_image, gpu=1))
    with pytest.raises(GPUUnavailableError) as info:
        in_session(lambda s: _urls(s, env))
    message = str(info.value)
    assert "NVIDIA runtime" in message and f"--server {actor_name}=fake" in message
    assert f"--server {actor_name}=endpoint:URL" in message
    assert containers(docker_client, actor_name) == []  # the `created` container is removed


def test_vllm_spec_runs_with_its_arguments(docker_client: Any, fake_image: str, actor_name: str) -> None:
    spec = VLLM(
        model="Qwen/Qwen2.5-0.5B-Instruct", image=fake_image, args=["--dtype=half", "--max-model-len=2000"],
        port=0, gpu=0, hf_token=None, lora_modules={"my-lora": "org/my-lora"}, shm_size="64Mi",
        startup_timeout=30,
    )  # fmt: skip
    env = ActorEnvironment(actor_name, spec, ttl_seconds=0)

    async def use(session: ActorSession) -> str:
        ctx = await session.context_for(env)
        reply = await ctx.client.chat.completions.create(
            model="my-lora", messages=[{"role": "user", "content": "Adapters work."}]
        )
        return reply.model

    assert in_session(use) == "my-lora"


def test_a_killed_replica_is_restarted_and_every_item_answered_once(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    import httpx

    spec = nim(fake_image, env={"NIMFLOW_FAKE_ARGS": "--latency-ms 40"})
    env = ActorEnvironment(actor_name, spec, replica_count=2, ttl_seconds=0, max_concurrency=4)
    items = [f"Item number {i} is here." for i in range(80)]

    async def use(session: ActorSession) -> tuple[dict[int, str], list[dict[str, Any]]]:
        ctx = await session.context_for(env)
        victim = next(c for c in containers(docker_client, actor_name) if c.labels["nimflow.replica"] == "1")
        answers: dict[int, str] = {}
        done = anyio.Event()

        async def ask(i: int) -> None:
            reply = await ctx.client.chat.completions.create(
                model=ctx.model, messages=[{"role": "user", "content": items[i]}]
            )
            assert i not in answers
            answers[i] = reply.choices[0].message.content or ""
            if len(answers) == 20:
                done.set()

        async def kill_mid_batch() -> None:
            await done.wait()
            await anyio.to_thread.run_sync(victim.kill)

        async with anyio.create_task_group() as group:
            group.start_soon(kill_mid_batch)
            for i in range(len(items)):
                group.start_soon(ask, i)
        logs = []
        async with httpx.AsyncClient(trust_env=False) as http:
            # The other replica may have answered every item before the restart is ready: wait
            # for it (bounded), its request log is the restarted server's own.
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        await http.get(ctx.replica_urls[1].removesuffix("/v1") + "/v1/health/ready")
                    ).status_code == 200:
                        break
                await anyio.sleep(0.1)
            for url in ctx.replica_urls:
                response = await http.get(url.removesuffix("/v1") + "/_fake/log")
                logs.extend(response.json()["requests"])
        return answers, logs

    answers, logs = in_session(use)
    assert sorted(answers) == list(range(len(items)))
    assert all(answers[i] == items[i] for i in answers)
    answered = [r["prompt"] for r in logs if r["path"] == "/v1/chat/completions" and r["status"] == 200]
    assert len(answered) == len(set(answered)), "an item was answered twice"
    assert containers(docker_client, actor_name) == []


def test_secrets_never_reach_labels(
    docker_client: Any, fake_image: str, actor_name: str, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("NGC_API_KEY", "nvapi-very-secret-value")
    env = ActorEnvironment(
        actor_name, nim(fake_image, secrets=NIMSecrets(ngc_api_key="NGC_API_KEY", hf_token=None))
    )

    async def use(session: ActorSession) -> dict[str, str]:
        await session.context_for(env)
        (container,) = containers(docker_client, actor_name)
        return dict(container.labels)

    labels = in_session(use)
    assert "nvapi-very-secret-value" not in json.dumps(labels)
    assert all("very-secret" not in (r.handle + r.base_url + r.model) for r in rows())
