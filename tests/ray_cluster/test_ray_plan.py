"""`nimflow actors plan` for actors placed on Ray: what each replica asks of the cluster, no local
GPU indices, and no connection to any cluster (none runs for these tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimflow.actors.launchers.ray_node import container_gpus
from nimflow.actors.servers import NIM, Container
from nimflow.cli import app

pytest.importorskip("ray", reason="Ray is not installed: pip install 'nimflow[ray]'")

PIPELINE = """
import nimflow as nf

nim = nf.NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", gpu=2, cpu=8, mem="20Gi", shm_size="16Gi")
on_ray = nf.ActorEnvironment("nim-actor", nim, replica_count=(1, 3), placement=nf.Ray(address="10.0.0.5:6379"))
proc = nf.ActorEnvironment(
    "proc-actor", nf.LocalProcess("serve --port {port}", model="m", gpu=1, env={"TOKEN": "tok-sentinel-77"}),
    replica_count=2,
)
box = nf.ActorEnvironment(
    "box-actor",
    nf.Container("team/server:2", args=["--port", "{port}"], port=0, model="m", gpu=1, env={"MODE": "fast"}),
    replica_count=2,
    placement=nf.Ray(address="10.0.0.5:6379"),
)

@on_ray.task
async def ask(text: str) -> str:
    return text

@proc.task
async def tell(text: str) -> str:
    return text

@box.task
async def probe(text: str) -> str:
    return text

@nf.workflow
def wf(text: str = "x") -> list[str]:
    return [ask(text=text), tell(text=text), probe(text=text)]
"""

# Run in a fresh interpreter: whether planning imported Ray (it must not need a cluster).
_PLAN_AND_CHECK = """
import sys
from typer.testing import CliRunner
from nimflow.cli import app
result = CliRunner().invoke(app, ["actors", "plan", sys.argv[1], "--json"])
assert result.exit_code == 0, result.output
print("ray imported" if "ray" in sys.modules else "ray not imported")
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.py"
    path.write_text(PIPELINE)
    return path


def plans(tmp_path: Path, *args: str, **env: str) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(app, ["actors", "plan", str(write(tmp_path)), "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    return {plan["actor"]: plan for plan in json.loads(result.output)}


def test_a_ray_placed_actor_plans_what_each_replica_asks_of_the_cluster(tmp_path: Path) -> None:
    # One local GPU: placing 3 replicas x 2 GPUs here would fail; on Ray no local GPU is placed.
    env = {"NIMFLOW_GPUS": "0", "NIMFLOW_DOCKER_NETWORK": "bridge", "NGC_API_KEY": "nvapi-sentinel-4242"}
    plan = plans(tmp_path, **env)["nim-actor"]
    assert plan["kind"] == "ray" and plan["runs"] == "container"
    assert plan["ray_address"] == "10.0.0.5:6379" and plan["ray_namespace"] == "nimflow"
    assert plan["image"] == "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0" and "NGC_API_KEY" in plan["env"]
    replicas = plan["ray_replicas"]
    assert (plan["replicas"], plan["min_replicas"]) == (3, 1)
    assert isinstance(replicas, list) and len(replicas) == 3  # the max of (1, 3)
    asked = {"num_gpus": 2, "num_cpus": 8.0, "memory": 20 * 2**30}
    assert [r["asks_ray_for"] for r in replicas] == [asked] * 3
    assert [r["name"].split(":")[:2] for r in replicas] == [
        ["nim-actor", "0"],
        ["nim-actor", "1"],
        ["nim-actor", "2"],
    ]
    assert "containers" not in plan and "gpu_device_ids" not in json.dumps(plan)
    assert not any("GPU placement" in note for note in plan["notes"])  # type: ignore[attr-defined]
    assert "sentinel" not in json.dumps(plan)

    text = CliRunner().invoke(app, ["actors", "plan", str(write(tmp_path))], env={**env, "COLUMNS": "250"})
    assert text.exit_code == 0, text.output
    assert "ray replica nim-actor:2:" in text.output and "'num_gpus': 2" in text.output
    assert "ray_address: 10.0.0.5:6379" in text.output and "sentinel" not in text.output


def test_placement_flag_and_address_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NIMFLOW_RAY_ADDRESS", raising=False)  # the test cluster sets it for the others
    local = plans(tmp_path, NIMFLOW_GPUS="0")["proc-actor"]
    assert local["kind"] == "process"
    address = "ray://admin:pw-sentinel-99@head.example:10001"
    plan = plans(tmp_path, "--placement", "proc-actor=ray", NIMFLOW_RAY_ADDRESS=address)["proc-actor"]
    assert (
        plan["kind"] == "ray"
        and plan["runs"] == "process"
        and plan["ray_address_from"] == "NIMFLOW_RAY_ADDRESS"
    )
    assert "head.example:10001" in str(plan["ray_address"]) and "sentinel" not in json.dumps(plan)
    assert plan["env"] == ["TOKEN"] and plan["command"] == "serve --port '{port}'"
    replicas = plan["ray_replicas"]
    assert isinstance(replicas, list)
    assert [r["asks_ray_for"] for r in replicas] == [{"num_gpus": 1, "num_cpus": 0.0}] * 2
    assert all("free port on its node" in r["port"] for r in replicas)
    default = plans(tmp_path, "--placement", "proc-actor=ray")["proc-actor"]
    assert default["ray_address"] == "auto" and "not set" in str(default["ray_address_from"])
    bad = CliRunner().invoke(app, ["actors", "plan", str(write(tmp_path)), "--placement", "other=ray"])
    assert bad.exit_code == 1 and "does not use" in bad.output


def test_planning_a_ray_placement_does_not_import_ray(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PLAN_AND_CHECK, str(write(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ray not imported"), done.stdout


def test_a_ray_placed_container_runs_through_the_node_docker_engine(tmp_path: Path) -> None:
    plan = plans(tmp_path, NIMFLOW_GPUS="0", NIMFLOW_DOCKER_NETWORK="bridge")["box-actor"]
    assert plan["kind"] == "ray" and plan["runs"] == "container"
    assert plan["image"] == "team/server:2" and plan["env"] == ["MODE"]
    assert not any("not container" in note for note in plan["notes"])  # type: ignore[attr-defined]
    replicas = plan["ray_replicas"]
    assert isinstance(replicas, list)
    assert [r["asks_ray_for"] for r in replicas] == [{"num_gpus": 1, "num_cpus": 0.0}] * 2


def test_the_container_gets_the_gpus_ray_assigned_and_none_without_a_gpu() -> None:
    two = NIM(image="nvcr.io/nim/x:1", gpu=2)
    assert container_gpus(two, [3, 5]) == ("3", "5")
    assert container_gpus(two, ["GPU-ab12", "GPU-cd34"]) == ("GPU-ab12", "GPU-cd34")
    # gpu=0: no device, even where Ray hands the actor ids of its node.
    assert container_gpus(Container("team/server:2", gpu=0), [0]) == ()
    assert container_gpus(Container("team/server:2", gpu=1), []) == ()
