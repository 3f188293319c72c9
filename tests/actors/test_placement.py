"""GPU placement: each replica its own GPU ids, GPUs held by other actors' warm replicas left
alone, a clear error when there are not enough; `nimflow actors ls` shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.types import DeviceRequest
from test_actor_docker_args import FakeClient  # the recording Docker client
from typer.testing import CliRunner

from nimflow._exceptions import GPUUnavailableError, UserInputError
from nimflow._store import Store
from nimflow.actors import records
from nimflow.actors.launchers import free_port
from nimflow.actors.launchers.base import ReplicaInfo
from nimflow.actors.launchers.docker import DockerLauncher
from nimflow.actors.placement import assign_gpus, host_gpus
from nimflow.actors.servers import NIM, VLLM, NIMSecrets

IMAGE = "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"


def nim(gpu: int | str = 1) -> NIM:
    return NIM(image=IMAGE, secrets=NIMSecrets(None, None), gpu=gpu)  # type: ignore[arg-type]


def warm(store: Store, actor: str, replica: int, gpus: tuple[str, ...]) -> None:
    info = ReplicaInfo(
        actor=actor, replica=replica, kind="docker", handle=f"c{replica}", base_url="http://127.0.0.1:1/v1",
        port=1, config_hash="h", model="m", ttl=900, gpus=gpus,
    )  # fmt: skip
    records.save(store, [records.Replica(info=info, model="m", ttl=900, gpus=gpus)], status="idle")


def test_replicas_get_distinct_gpus_and_skip_those_other_actors_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMFLOW_GPUS", "0,1,2,3")
    store = Store.open()
    try:
        assert assign_gpus(store, "a", nim(1), [0, 1, 2, 3], {}) == {
            0: ("0",),
            1: ("1",),
            2: ("2",),
            3: ("3",),
        }
        warm(store, "other", 0, ("1",))
        assert assign_gpus(store, "a", nim(1), [0, 1], {}) == {0: ("0",), 1: ("2",)}
        assert assign_gpus(store, "a", VLLM(model="m", gpu=2), [0], {}) == {0: ("0", "2")}
        # This actor's adopted replica keeps its GPU; the new one gets another.
        adopted = ReplicaInfo("a", 0, "docker", "x", "u", 1, "h", "m", 900, gpus=("0",))
        assert assign_gpus(store, "a", nim(1), [1], {0: adopted}) == {1: ("2",)}
        with pytest.raises(GPUUnavailableError) as info:
            assign_gpus(store, "a", nim(1), [0, 1, 2, 3], {})
        message = str(info.value)
        assert "needs 4 GPU(s)" in message and "only 3 are free" in message
        assert "GPU 1 by other/0" in message and "nimflow actors stop" in message
        assert "--server a=fake" in message
        assert assign_gpus(store, "a", nim(0), [0], {}) == {}  # no GPU asked
        assert assign_gpus(store, "a", nim("all"), [0], {}) == {}  # the whole host, not placed
    finally:
        store.close()


def test_no_gpus_known_and_bad_nimflow_gpus_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMFLOW_GPUS", "")
    store = Store.open()
    try:
        with pytest.raises(GPUUnavailableError, match=r"no GPUs were found \(NIMFLOW_GPUS\)"):
            assign_gpus(store, "a", nim(1), [0], {})
    finally:
        store.close()
    monkeypatch.setenv("NIMFLOW_GPUS", "zero,one")
    with pytest.raises(UserInputError, match="NIMFLOW_GPUS=0,1,2,3"):
        host_gpus()


def test_placed_gpus_become_device_ids_and_a_label(home: Path) -> None:
    client = FakeClient()
    launcher = DockerLauncher(client)
    info = launcher.start("nim-actor", 1, nim(1), port=free_port(), ttl=900, gpus=("2",))
    kwargs = client.run_kwargs()
    assert kwargs["device_requests"] == [DeviceRequest(device_ids=["2"], capabilities=[["gpu"]])]
    assert kwargs["labels"]["nimflow.gpus"] == "2"
    assert info.gpus == ("2",)  # an adopting run reads them back from the label


def test_actors_ls_shows_each_replicas_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from nimflow.cli import app

    store = Store.open()
    try:
        warm(store, "gpu-actor", 0, ("0",))
        warm(store, "gpu-actor", 1, ("1", "2"))
    finally:
        store.close()
    result = CliRunner().invoke(app, ["actors", "ls"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "gpu-actor" in line]
    assert "gpus" in result.output
    assert " 0 " in lines[0] and "1,2" in lines[1]
