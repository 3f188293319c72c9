"""An autoscaled actor on the real local Ray cluster (see conftest.py): the bounds of
replica_count=(min, max) hold on Ray as they do locally. The run is a separate nimflow process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from autoscale.support import events
from ray_support import assert_answered, named_actors, node_of, replicas, wait_until

from nimflow.actors.launchers.ray import NAMESPACE

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'nimflow[ray]'")
LocalCluster = Any  # conftest.LocalCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

PIPELINE = Path(__file__).with_name("ray_burst.py")


@pytest.fixture(autouse=True)
def no_replicas_left(ray_cluster: LocalCluster) -> Iterator[None]:
    yield
    for name in named_actors():
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


def nimflow_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "nimflow", *args],
        env={**os.environ, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_burst_scales_to_three_ray_replicas_on_three_nodes_and_back_to_one(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    # 12 items in flight, 2 per replica, 400 ms each: a backlog for 3 replicas (one GPU, one node each).
    items = [f"Item {i} asks for its answer." for i in range(90)]
    logs, out = tmp_path / "logs", tmp_path / "result.json"
    logs.mkdir()
    run = subprocess.Popen(
        [sys.executable, str(PIPELINE), json.dumps(items), str(out)],
        env={**os.environ, "NIMFLOW_TEST_LOG_DIR": str(logs)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    nodes: set[str] = set()
    try:
        deadline = time.monotonic() + 200
        while run.poll() is None and time.monotonic() < deadline:  # the nodes the replicas ran on
            nodes |= {node_of(r) for r in replicas() if node_of(r)}
            time.sleep(0.5)
        _, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err[-3000:]
    result = json.loads(out.read_text())
    assert_answered(items, result["outputs"])

    ups = [e for e in events(result["run_id"]) if e.to_count > e.from_count]
    assert ups and max(e.to_count for e in ups) == 3 and all(e.to_count <= 3 for e in ups), ups
    # The three nodes of the cluster (this file runs before the node-kill test removes one).
    assert len(nodes) == 3, "one logical GPU per node: three replicas, three nodes"

    # Back to the minimum after scaledown_seconds idle (in the run, or after it the janitor).
    wait_until(lambda: len(named_actors()) == 1, 60, "the extra Ray replicas to be stopped")
    wait_until(lambda: [r.replica for r in replicas()] == [0], 30, "the extra replicas' rows to go")
    (warm,) = replicas()
    assert (warm.kind, warm.min_replicas, warm.max_replicas) == ("ray", 1, 3)
    assert "1/3" in nimflow_cli("actors", "ls")
    # Every item answered once: the stopped replicas left their logs, the warm one still serves its own.
    stopped = [json.loads(p.read_text()) for p in sorted(logs.glob("*.json"))]
    assert len(stopped) >= 2 and all(s["answered"] for s in stopped), stopped
    log = httpx.get(warm.base_url.removesuffix("/v1") + "/_fake/log", timeout=10).json()["requests"]
    answered = [e["prompt"] for e in log if e["path"] == "/v1/chat/completions" and e["status"] == 200]
    assert answered, "the warm replica served part of the burst"
    counts = Counter(answered + [p for s in stopped for p in s["answered"]])
    assert counts == Counter(items)

    nimflow_cli("actors", "stop", "--all")
    wait_until(lambda: not named_actors(), 30, "the Ray actors to go")
    assert replicas() == []
