"""`nimflow actors plan FILE`: what a run would start, without starting it or reading a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimflow._exceptions import UserInputError
from nimflow.cli import app

PIPELINE = """
import nimflow as nf

nim = nf.NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", gpu=1, mem="20Gi", shm_size="16Gi",
             env={"NIM_PEFT_SOURCE": "/home/nvs/loras"}, hf_repo_ids=["org/OrpoLlama"], port=8000)
actor = nf.ActorEnvironment("nim-actor", nim, replica_count=2)

@actor.task
async def ask(text: str) -> str:
    return text

@nf.workflow
def wf(text: str = "x") -> str:
    return ask(text=text)
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.py"
    path.write_text(PIPELINE)
    return path


def test_plan_lists_containers_gpus_and_env_names_without_values(tmp_path: Path, home: Path) -> None:
    env = {"NIMFLOW_GPUS": "0,1,2", "NIMFLOW_DOCKER_NETWORK": "host", "NGC_API_KEY": "nvapi-sentinel-4242",
           "HF_TOKEN": "hf_sentinel_4343", "COLUMNS": "250"}  # fmt: skip
    result = CliRunner().invoke(app, ["actors", "plan", str(write(tmp_path)), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert "sentinel" not in result.output  # names only, values never
    (plan,) = json.loads(result.output)
    assert plan["kind"] == "container" and plan["image"] == "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"
    assert {"NGC_API_KEY", "HF_TOKEN", "NIM_PEFT_SOURCE", "NIM_SERVER_PORT"} <= set(plan["env"])
    assert [c["gpu_device_ids"] for c in plan["containers"]] == [["0"], ["1"]]
    assert [c["port"] for c in plan["containers"]] == [8000, 8001]
    assert plan["containers"][1]["labels"]["nimflow.gpus"] == "1"
    assert plan["shm_size"] == 16 * 2**30 and plan["mem_limit"] == 20 * 2**30
    assert plan["network_mode"].startswith("host") and plan["health_endpoint"] == "/v1/health/ready"
    assert any("/opt/nim/.cache" in m for m in plan["mounts"].values())
    assert any("cannot be bound to 127.0.0.1 only" in note for note in plan["notes"])
    assert not (home / "loras").exists()  # nothing fetched or made
    text = CliRunner().invoke(app, ["actors", "plan", str(write(tmp_path))], env=env)
    assert text.exit_code == 0 and "gpu_device_ids: ['1']" in text.output and "sentinel" not in text.output


def test_plan_reads_server_model_and_gpus_like_run(tmp_path: Path) -> None:
    path = write(tmp_path)
    env = {"NIMFLOW_GPUS": "0", "NIMFLOW_DOCKER_NETWORK": "host"}
    short = CliRunner().invoke(app, ["actors", "plan", str(path), "--json"], env=env)
    (plan,) = json.loads(short.output)
    assert "needs 2 GPU(s)" in " ".join(plan["notes"])  # one GPU for two replicas
    fake = CliRunner().invoke(
        app,
        ["actors", "plan", str(path), "--json", "--server", "nim-actor=fake", "--model", "nim-actor=tiny"],
        env=env,
    )
    (plan,) = json.loads(fake.output)
    assert plan["kind"] == "fake" and plan["model"] == "tiny" and plan["adapters"] == []
    bad = CliRunner().invoke(app, ["actors", "plan", str(path), "--server", "other=fake"], env=env)
    assert bad.exit_code == 1 and "does not use" in bad.output


def test_an_error_with_brackets_is_printed_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich markup would take `[ray]` for a style and drop it from the fix the message gives."""
    from nimflow.actors import plan as plan_module

    def missing_ray(*args: object, **kwargs: object) -> list[dict[str, object]]:
        raise UserInputError("Ray is not installed: pip install 'nimflow[ray]'")

    monkeypatch.setattr(plan_module, "plan_actors", missing_ray)
    result = CliRunner().invoke(app, ["actors", "plan", str(write(tmp_path))], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "pip install 'nimflow[ray]'" in result.output
