"""Actors placed on a real local Ray cluster (see conftest.py): fake-server replicas run as
LocalProcess servers on the nodes Ray picks; runs are separate nimflow processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray_support import assert_answered, fake_servers, named_actors, node_of, replicas, wait_until
from sqlmodel import select

from nimflow._store import ActorReplica, Store, TaskRun
from nimflow.actors.launchers.ray import NAMESPACE, describe_handle

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'nimflow[ray]'")
LocalCluster = Any  # conftest.LocalCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

PIPELINE = Path(__file__).with_name("ray_pipeline.py")
ITEMS = [f"Item {i} asks for its answer." for i in range(12)]


def run_pipeline(items: list[str], timeout: float = 150, **env: str) -> dict[str, Any]:
    out = Path(os.environ["NIMFLOW_HOME"]).parent / f"result-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, str(PIPELINE), json.dumps(items), str(out)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def nimflow_cli(*args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "nimflow", *args],
        env={**os.environ, "COLUMNS": "300", **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def serving(row: ActorReplica) -> bool:
    """Whether the replica's server has requests running (so nimflow routes to it)."""
    try:
        metrics = httpx.get(row.base_url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return False
    running = [line for line in metrics.splitlines() if line.startswith("vllm:num_requests_running")]
    return any(float(line.split()[-1]) > 0 for line in running)


@pytest.fixture(autouse=True)
def no_replicas_left(ray_cluster: LocalCluster) -> Iterator[None]:
    yield
    # Whatever a failed test left: its replicas, by name, in nimflow's namespace only.
    for name in named_actors():
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


def test_replicas_spread_over_nodes_and_serve_and_actors_ls_stop_them(ray_cluster: LocalCluster) -> None:
    result = run_pipeline(ITEMS)
    assert_answered(ITEMS, result["outputs"])
    rows = replicas()
    assert [r.kind for r in rows] == ["ray", "ray"]
    assert len({node_of(r) for r in rows}) == 2, "one logical GPU per node: two replicas, two nodes"
    assert {r.base_url.split("//")[1].split(":")[0] for r in rows} == {"127.0.0.1"}
    for row in rows:  # nimflow routed to both replicas' URLs
        metrics = httpx.get(row.base_url + "/metrics", timeout=10).text
        served = [line for line in metrics.splitlines() if 'path="/v1/chat/completions",status="200"' in line]
        assert served and int(served[0].split()[-1]) > 0, metrics
    assert len(named_actors()) == 2

    listing = nimflow_cli("actors", "ls")
    for row in rows:
        assert describe_handle(row.handle) in listing
    assert listing.count("127.0.0.1") >= 2 and "ray" in listing

    stopped = nimflow_cli("actors", "stop", "--all")
    assert stopped.count("stopped ray-actor/") == 2
    wait_until(lambda: not named_actors(), 30, "the Ray actors to go")
    assert replicas() == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(rows[0].base_url + "/models", timeout=5)


def test_a_second_process_adopts_the_replicas_and_a_changed_config_replaces_them(
    ray_cluster: LocalCluster,
) -> None:
    first = run_pipeline(ITEMS[:4])
    handles = {r.handle for r in replicas()}
    assert len(handles) == 2
    assert "already running" not in first["served_by"]["ray-actor"]
    # The second run places the actor from the command line; it finds the replicas by name.
    second = nimflow_cli(
        "run", str(PIPELINE), "--items", json.dumps(ITEMS[4:8]),
        "--placement", f"ray-actor=ray:{ray_cluster.address}", NIMFLOW_TEST_PLACEMENT="cli",
    )  # fmt: skip
    assert "2 replicas (2 already running) on Ray" in second
    assert {r.handle for r in replicas()} == handles
    names = named_actors()

    third = run_pipeline(ITEMS[8:], NIMFLOW_TEST_VERSION="2")
    assert_answered(ITEMS[8:], third["outputs"])
    assert "already running" not in third["served_by"]["ray-actor"]
    assert not ({r.handle for r in replicas()} & handles)
    wait_until(lambda: not (named_actors() & names), 30, "the replaced Ray actors to go")
    assert len(named_actors()) == 2
    nimflow_cli("actors", "stop", "--all")


def test_ttl_zero_stops_replicas_at_the_end_and_the_janitor_stops_idle_ones(
    ray_cluster: LocalCluster,
) -> None:
    # ttl_seconds=0: the run itself stops its Ray replicas, servers included, before it ends.
    run_pipeline(ITEMS[:3], NIMFLOW_TEST_TTL="0")
    assert named_actors() == set() and replicas() == []
    wait_until(
        lambda: not fake_servers(ray_cluster.marker), 30, "the servers of the stopped replicas to exit"
    )

    # ttl_seconds=10: the replicas outlive the run, idle and serving, until the janitor stops them.
    # (The TTL counts from the run's release, before its process has shut Ray down: 10 s leaves
    # a loaded machine time to read the rows before the janitor may act.)
    run_pipeline(ITEMS[:3], NIMFLOW_TEST_TTL="10")
    rows = replicas()
    assert len(rows) == 2 and {r.status for r in rows} == {"idle"} and {r.ttl_seconds for r in rows} == {10.0}
    assert len(fake_servers(ray_cluster.marker)) >= 2
    wait_until(lambda: not named_actors(), 60, "the janitor to stop the idle Ray replicas")
    wait_until(lambda: replicas() == [], 30, "the janitor to forget them")
    wait_until(
        lambda: not fake_servers(ray_cluster.marker), 30, "the servers of the stopped replicas to exit"
    )
    for row in rows:
        with pytest.raises(httpx.HTTPError):
            httpx.get(row.base_url + "/models", timeout=5)
    janitor_log = (Path(os.environ["NIMFLOW_HOME"]) / "janitor.log").read_text()
    assert all(f"stopping {row.id} (TTL passed)" in janitor_log for row in rows), janitor_log[-2000:]


def test_a_node_killed_mid_batch_restarts_its_replica_elsewhere_and_answers_every_item_once(
    ray_cluster: LocalCluster,
) -> None:
    # 30 items, 2 at a time, 2 s each: the batch outlasts the node's death and the replica's restart.
    items = [f"Item {i} asks for its answer." for i in range(30)]
    result_file = Path(os.environ["NIMFLOW_HOME"]).parent / "result.json"
    run = subprocess.Popen(
        [sys.executable, str(PIPELINE), json.dumps(items), str(result_file)],
        env={**os.environ, "NIMFLOW_TEST_LATENCY_MS": "2000", "NIMFLOW_TEST_CONCURRENCY": "2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # A row is recorded when its replica starts: wait until both serve (the acquisition is done).
        wait_until(
            lambda: len(replicas()) == 2 and all(map(serving, replicas())), 90, "both replicas serving"
        )
        rows = replicas()
        victim = next(r for r in rows if ray_cluster.worker_by_node_id(node_of(r)) is not None)
        others = {node_of(r) for r in rows if r is not victim}
        ray_cluster.cluster.remove_node(ray_cluster.worker_by_node_id(node_of(victim)), allow_graceful=False)
        ray_cluster.workers = [w for w in ray_cluster.workers if w.node_id != node_of(victim)]
        _, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err[-3000:]
    assert_answered(items, json.loads(result_file.read_text())["outputs"])
    store = Store.open()
    try:
        with store.session() as session:
            item_rows = [t for t in session.exec(select(TaskRun)) if t.item is not None]
    finally:
        store.close()
    assert sorted(t.item for t in item_rows) == list(range(len(items)))  # type: ignore[type-var]
    assert {t.status for t in item_rows} == {"succeeded"}
    restarted = next(r for r in replicas() if r.replica == victim.replica)
    assert node_of(restarted) not in {node_of(victim), *others}, "restarted on the node that was free"
    nimflow_cli("actors", "stop", "--all")
