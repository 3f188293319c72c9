"""A real local Ray cluster for the Ray placement tests: a head and two worker nodes on 127.0.0.1,
one logical GPU each. Started once for these tests; at the end only its own processes are
stopped (every one of them carries a marker in its environment, which the teardown checks)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray_support import MARKER, marked_pids

# Read by Ray when it is imported, so set before: no usage statistics sent to an outside host, and
# ray.init keeps 127.0.0.1 instead of rewriting it to the interface address (where nothing listens).
for _name in ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
    os.environ[_name] = "0"

try:
    import ray
except ImportError:  # the fixture skips; the Kubernetes tests here need no Ray
    ray = None


@dataclass
class LocalCluster:
    cluster: Any
    workers: list[Any]
    address: str
    marker: str
    started_in: float

    def worker_by_node_id(self, node_id: str) -> Any | None:
        return next((w for w in self.workers if w.node_id == node_id), None)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'nimflow[ray]'")
    from ray.cluster_utils import Cluster

    marker = uuid.uuid4().hex
    # Cluster wants its own temp dir; a short one, as Ray's socket paths must fit in 107 bytes.
    tmpdir = tempfile.mkdtemp(prefix="nfray-")
    env = {"RAY_TMPDIR": tmpdir, MARKER: marker}
    saved = {name: os.environ.get(name) for name in [*env, "NIMFLOW_RAY_ADDRESS"]}
    os.environ.update(env)
    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "num_gpus": 1,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
        },
    )
    try:
        workers = [cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
        cluster.wait_for_nodes()
        started_in = time.monotonic() - started
        os.environ["NIMFLOW_RAY_ADDRESS"] = cluster.address
        ray.init(address=cluster.address, namespace="nimflow-tests", log_to_driver=False)
        yield LocalCluster(cluster, workers, cluster.address, marker, started_in)
    finally:
        ray.shutdown()
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        left = _wait_gone(marker, 30.0)
        described = [_cmdline(pid) for pid in left]
        for pid in left:  # ours alone: they carry this cluster's marker
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmpdir, ignore_errors=True)
        assert not left, f"processes of the test cluster were left running: {described}"


def _cmdline(pid: int) -> str:
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return str(pid)


def _wait_gone(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = marked_pids(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = marked_pids(marker)
    return left
