"""An autoscaled actor of real containers (the fake server in a locally built image)."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import pytest

import nimflow as nf

from .support import events, make_workflow

pytestmark = pytest.mark.docker


def containers(client: Any, actor: str) -> list[Any]:
    return list(client.containers.list(filters={"label": [f"nimflow.actor={actor}"]}))


def test_containers_scale_up_on_backlog_and_stop_after_the_run(docker_client: Any, fake_image: str) -> None:
    actor = f"as-{uuid.uuid4().hex[:8]}"  # distinct names on a shared engine
    server = nf.NIM(
        image=fake_image, secrets=nf.NIMSecrets(ngc_api_key=None, hf_token=None), model="fake-model",
        port=0, gpu=0, mem="256Mi", shm_size="64Mi", startup_timeout=30,
        env={"NIMFLOW_FAKE_ARGS": "--max-concurrency 4 --latency-ms 100"},
    )  # fmt: skip
    env = nf.ActorEnvironment(
        actor, server, replica_count=(1, 3), max_concurrency=4, scaledown_seconds=1, ttl_seconds=0
    )
    try:
        result = nf.run(make_workflow(env), n=200)
        assert len(result.outputs) == 200 and all(text for text, _ in result.outputs)
        assert max(n for _, n in result.outputs) == 3
        ups = [e for e in events(result.run_id) if e.to_count > e.from_count]
        assert ups and max(e.to_count for e in ups) == 3
        assert containers(docker_client, actor) == []  # ttl 0: every container stopped at the end
    finally:
        for container in docker_client.containers.list(
            all=True, filters={"label": [f"nimflow.actor={actor}"]}
        ):
            with contextlib.suppress(Exception):
                container.remove(force=True)
        from nimflow.actors import janitor

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and janitor.is_running():
            time.sleep(0.2)
