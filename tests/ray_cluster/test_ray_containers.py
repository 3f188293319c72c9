"""nf.Container replicas placed on the local Ray cluster (see conftest.py): each Ray actor starts
its container through the Docker engine of its node (here the machine's own engine, host
networking, 127.0.0.1), with the fake-server image the Docker tests build."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_support import named_actors, replicas, wait_until

from nimflow.actors.launchers.ray import NAMESPACE, describe_handle

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'nimflow[ray]'")
LocalCluster = Any  # conftest.LocalCluster

pytestmark = [pytest.mark.ray, pytest.mark.docker, pytest.mark.timeout(300)]

PIPELINE = Path(__file__).with_name("ray_pipeline.py")
ITEMS = [f"Item {i} asks for its answer." for i in range(40)]


@pytest.fixture()
def actor_name(docker_client: Any, ray_cluster: LocalCluster) -> Iterator[str]:
    name = f"ray-box-{uuid.uuid4().hex[:8]}"
    yield name
    # Whatever a failed test left: its Ray actors, by name, then its containers, by label.
    for replica in named_actors():
        if replica.startswith(f"{name}:"):
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(replica, namespace=NAMESPACE), no_restart=True)
    for container in containers(docker_client, name):
        with contextlib.suppress(Exception):
            container.remove(force=True)


def containers(client: Any, actor: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": [f"nimflow.actor={actor}"]}))


def run_pipeline(items: list[str], **env: str) -> dict[str, Any]:
    out = Path(os.environ["NIMFLOW_HOME"]).parent / f"result-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, str(PIPELINE), json.dumps(items), str(out)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def test_container_replicas_start_through_the_ray_actors_and_ttl_zero_stops_them(
    docker_client: Any, fake_image: str, actor_name: str
) -> None:
    settings = {"NIMFLOW_TEST_IMAGE": fake_image, "NIMFLOW_TEST_ACTOR": actor_name}
    result = run_pipeline(ITEMS, NIMFLOW_TEST_TTL="600", **settings)
    assert len(result["outputs"]) == len(ITEMS)
    for item, answer in zip(ITEMS, result["outputs"], strict=True):
        assert f"Item {item.split()[1]} " in answer, (item, answer)
    assert "on Ray" in result["served_by"][actor_name]

    rows = replicas()
    assert [(r.actor, r.kind) for r in rows] == [(actor_name, "ray")] * 2
    found = containers(docker_client, actor_name)
    assert len(found) == 2 and all(c.status == "running" for c in found)
    by_replica = {int(c.labels["nimflow.replica"]): c for c in found}
    assert sorted(by_replica) == [0, 1]
    for row in rows:  # each replica's URL is its container's port, on loopback
        container = by_replica[row.replica]
        assert row.base_url == f"http://127.0.0.1:{container.labels['nimflow.port']}/v1"
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert fake_image in container.attrs["Config"]["Image"]
    # The Ray actor of each replica holds its container: its log is that container's.
    names = {n for n in named_actors() if n.startswith(f"{actor_name}:")}
    assert len(names) == 2
    for name in names:
        handle = ray.get_actor(name, namespace=NAMESPACE)
        info = ray.get(handle.describe.remote(), timeout=30)
        log = ray.get(handle.logs.remote(), timeout=30)
        assert f"port={info['port']}" in log and "fake server: model=fake-model" in log, log
    listing = subprocess.run(
        [sys.executable, "-m", "nimflow", "actors", "ls"],
        env={**os.environ, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-2000:]
    for row in rows:
        assert describe_handle(row.handle) in listing.stdout

    # ttl_seconds=0: a second run adopts both and stops them, containers included, at its end.
    again = run_pipeline(ITEMS[:4], NIMFLOW_TEST_TTL="0", **settings)
    assert "(2 already running)" in again["served_by"][actor_name]
    assert all(f"Item {i} " in a for i, a in enumerate(again["outputs"]))
    assert not {n for n in named_actors() if n.startswith(f"{actor_name}:")}
    assert replicas() == []
    wait_until(lambda: not containers(docker_client, actor_name), 30, "the containers to be removed")
