"""nf.Container: any OpenAI-compatible image, with the adoption, TTL, placement and readiness of
NIM and vLLM; tested with a tiny stdlib server image that is not nimflow's fake server."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
from docker_support import containers, in_session

import nimflow as nf
from nimflow._exceptions import ActorConfigError, ServerExitedError
from nimflow.actors.pool import ActorSession

T = TypeVar("T")




def tiny(image: str, **kwargs: Any) -> nf.Container:
    options: dict[str, Any] = dict(
        args=["--port", "{port}", "--model", "tiny-model"], port=0, model="tiny-model",
        env={"TINY_GREETING": "hello"}, secrets=["TINY_TOKEN"], labels={"team": "nlp"}, mem="128Mi",
        startup_timeout=30,
    )  # fmt: skip
    options.update(kwargs)
    return nf.Container(image, **options)


async def ask(session: ActorSession, env: nf.ActorEnvironment) -> tuple[list[str], set[str], str]:
    ctx = await session.context_for(env)
    answers = set()
    for i in range(6):  # routed over both replicas
        reply = await ctx.client.chat.completions.create(
            model=ctx.model, messages=[{"role": "user", "content": f"Question {i}."}]
        )
        answers.add((reply.choices[0].message.content or "").split("]:")[0])
    return ctx.replica_urls, answers, session.served_by()[env.name]


def test_container_runs_an_image_of_its_own_with_ports_labels_env_and_adoption(
    docker_client: Any, tiny_image: str, actor_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_TOKEN", "tiny-token-sentinel-77")
    env = nf.ActorEnvironment(actor_name, tiny(tiny_image), replica_count=2, ttl_seconds=60)
    urls, answers, _ = in_session(lambda s: ask(s, env))
    assert len(set(urls)) == 2  # each replica on its own port under host networking
    ports = {url.rsplit(":", 1)[1].split("/")[0] for url in urls}
    assert answers == {f"tiny[hello|token=yes|port={p}" for p in ports}
    found = containers(docker_client, actor_name)
    assert len(found) == 2 and all(c.status == "running" for c in found)
    for container in found:
        labels = container.labels
        assert labels["team"] == "nlp" and labels["nimflow.actor"] == actor_name  # the user's beside ours
        assert "tiny-token-sentinel-77" not in str(labels)
    # A second session adopts both (the warm TTL), starting nothing.
    again, _, served = in_session(lambda s: ask(s, env))
    assert again == urls and "(2 already running)" in served
    assert {c.id for c in containers(docker_client, actor_name)} == {c.id for c in found}
    # Its identity names the image digest, not the ports.
    digest = docker_client.images.get(tiny_image).id

    async def identity(session: ActorSession) -> str:
        return await session.identity(env)

    assert in_session(identity).endswith(f"@{digest}")


def test_container_ttl_zero_stops_and_a_crash_shows_exit_code_and_log(
    docker_client: Any, tiny_image: str, actor_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_TOKEN", "x-token")
    env = nf.ActorEnvironment(actor_name, tiny(tiny_image), ttl_seconds=0)
    in_session(lambda s: ask(s, env))
    assert containers(docker_client, actor_name) == []
    # A bad port argument: the server dies while starting; its exit code and log reach the message.
    broken = nf.ActorEnvironment(actor_name, tiny(tiny_image, args=["--port", "not-a-port"]), ttl_seconds=0)
    with pytest.raises(ServerExitedError) as info:
        in_session(lambda s: ask(s, broken))
    message = str(info.value)
    assert "exited with code 1" in message and "ValueError" in message
    assert containers(docker_client, actor_name) == []


def test_container_under_host_networking_needs_a_port_for_each_replica(
    docker_client: Any, tiny_image: str, actor_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_TOKEN", "x-token")
    monkeypatch.setenv("NIMFLOW_DOCKER_NETWORK", "host")
    env = nf.ActorEnvironment(actor_name, tiny(tiny_image, args=["--model", "tiny-model"]), replica_count=2)
    with pytest.raises(ActorConfigError, match=r"port_env='PORT'"):
        in_session(lambda s: ask(s, env))
    # port_env instead of {port}: the image reads its port from the environment.
    env = nf.ActorEnvironment(
        actor_name, tiny(tiny_image, args=["--model", "tiny-model"], port_env="TINY_PORT"), replica_count=2,
        ttl_seconds=0,
    )  # fmt: skip
    urls, answers, _ = in_session(lambda s: ask(s, env))
    assert len(answers) == 2 and len(set(urls)) == 2
    with pytest.raises(ActorConfigError, match="nimflow"):
        nf.Container(tiny_image, labels={"nimflow.actor": "x"})
