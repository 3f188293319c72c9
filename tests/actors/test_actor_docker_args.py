"""The exact arguments the docker launcher gives the Docker SDK, with a recording fake client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest
from docker.types import DeviceRequest

from nimflow._exceptions import (
    ActorConfigError,
    DockerUnavailableError,
    GPUUnavailableError,
    ImageNotAvailableError,
    PortInUseError,
    SecretMissingError,
)
from nimflow.actors.launchers import free_port
from nimflow.actors.launchers.docker import DockerLauncher
from nimflow.actors.servers import NIM, VLLM, NIMSecrets

NGC = "nvapi-secret-value-123"
HF = "hf_secret_value_456"


class FakeContainer:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.id = "c0ffee" * 10
        self.name = kwargs["name"]
        self.labels = kwargs["labels"]
        self.status = "created"
        self.attrs: dict[str, Any] = {"State": {"ExitCode": 0, "OOMKilled": False}}
        self.removed = False

    def reload(self) -> None:
        self.status = "running"

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeClient:
    """Records every call the launcher makes."""

    def __init__(self, *, have_image: bool = False, bridge: bool = False, run_error: Exception | None = None):
        self.calls: list[tuple[str, Any]] = []
        self.have_image = have_image
        self.run_error = run_error
        self.created: dict[str, FakeContainer] = {}
        client = self

        class Images:
            def get(self, ref: str) -> object:
                client.calls.append(("images.get", ref))
                if not client.have_image:
                    raise docker.errors.ImageNotFound("no such image")
                return object()

        class Api:
            def pull(self, repository: str, tag: str, stream: bool, decode: bool) -> Any:
                client.calls.append(("pull", (repository, tag)))
                client.have_image = True
                return iter([{"status": "Downloading", "progress": "[==>  ]"}, {"status": "Pull complete"}])

        class Containers:
            def run(self, **kwargs: Any) -> FakeContainer:
                client.calls.append(("run", kwargs))
                container = FakeContainer(kwargs)
                client.created[kwargs["name"]] = container
                if client.run_error is not None:
                    raise client.run_error
                return container

            def get(self, ref: str) -> FakeContainer:
                client.calls.append(("containers.get", ref))
                if ref in client.created:
                    return client.created[ref]
                raise docker.errors.NotFound("gone")

        class Networks:
            def list(self, names: list[str]) -> list[str]:
                return ["bridge"] if bridge else []

        self.images, self.api, self.containers, self.networks = Images(), Api(), Containers(), Networks()

    def login(self, username: str, password: str, registry: str) -> None:
        self.calls.append(("login", (username, password, registry)))

    def run_kwargs(self) -> dict[str, Any]:
        (kwargs,) = [c[1] for c in self.calls if c[0] == "run"]
        return dict(kwargs)


def start(client: FakeClient, spec: Any, *, port: int | None = None, fetch: Any = None) -> Any:
    launcher = DockerLauncher(client, fetch=fetch)
    return launcher.start("nim-actor", 0, spec, port=port or free_port(), ttl=900)


def test_nim_with_gpu_limits_secrets_cache_and_ngc_login(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("NGC_API_KEY", NGC)
    client = FakeClient()
    spec = NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", gpu=1, cpu=4, mem="20Gi", shm_size="16Gi")
    port = free_port()
    info = start(client, spec, port=port)

    names = [c[0] for c in client.calls]
    assert names.index("login") < names.index("pull") < names.index("run")  # log in before pulling
    assert ("login", ("$oauthtoken", NGC, "nvcr.io")) in client.calls
    assert ("pull", ("nvcr.io/nim/meta/llama3-8b-instruct", "1.0.0")) in client.calls
    kwargs = client.run_kwargs()
    assert kwargs["device_requests"] == [DeviceRequest(count=1, capabilities=[["gpu"]])]
    assert kwargs["shm_size"] == 16 * 1024**3
    assert kwargs["mem_limit"] == 20 * 1024**3
    assert kwargs["nano_cpus"] == 4_000_000_000
    assert kwargs["environment"]["NGC_API_KEY"] == NGC
    assert kwargs["environment"]["NIM_SERVER_PORT"] == str(port)
    assert kwargs["volumes"] == {str(home / "cache" / "nim"): {"bind": "/opt/nim/.cache", "mode": "rw"}}
    assert kwargs["init"] is True and kwargs["detach"] is True
    assert "auto_remove" not in kwargs
    assert kwargs["network_mode"] == "host" and "ports" not in kwargs  # no bridge on this engine
    assert kwargs["name"] == "nimflow-nim-actor-0"
    labels = kwargs["labels"]
    assert labels["nimflow.actor"] == "nim-actor" and labels["nimflow.replica"] == "0"
    assert labels["nimflow.config"] == spec.config_hash() and labels["nimflow.port"] == str(port)
    assert labels["nimflow.ttl"] == "900"
    assert NGC not in repr(labels) and NGC not in repr(info)
    assert info.base_url == f"http://127.0.0.1:{port}/v1"


def test_bridge_network_publishes_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGC_API_KEY", NGC)
    client = FakeClient(have_image=True, bridge=True)
    port = free_port()
    start(client, NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", gpu="all"), port=port)
    kwargs = client.run_kwargs()
    assert kwargs["ports"] == {"8000/tcp": ("127.0.0.1", port)}
    assert "network_mode" not in kwargs
    assert "NIM_SERVER_PORT" not in kwargs["environment"]
    assert kwargs["device_requests"] == [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    assert not any(c[0] in ("login", "pull") for c in client.calls)  # the image is here: no pull


def test_nim_lora_adapters_are_fetched_into_the_folder_mounted_at_nim_peft_source(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("NGC_API_KEY", NGC)
    monkeypatch.setenv("HF_TOKEN", HF)
    fetched: list[tuple[tuple[str, ...], Path, str]] = []
    spec = NIM(
        image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0",
        hf_repo_ids=["Samhita/OrpoLlama-3-8B-Instruct"],
        env={"NIM_PEFT_SOURCE": "/home/nvs/loras"},
    )
    client = FakeClient(have_image=True)
    start(client, spec, fetch=lambda repos, folder, token: fetched.append((repos, folder, token)))
    folder = home / "loras" / "nim-actor"
    assert fetched == [(("Samhita/OrpoLlama-3-8B-Instruct",), folder, HF)]
    kwargs = client.run_kwargs()
    assert kwargs["volumes"][str(folder)] == {"bind": "/home/nvs/loras", "mode": "ro"}
    assert kwargs["environment"]["NIM_PEFT_SOURCE"] == "/home/nvs/loras"
    assert kwargs["environment"]["HF_TOKEN"] == HF
    assert spec.adapters() == ("OrpoLlama-3-8B-Instruct",)
    assert HF not in repr(kwargs["labels"])


def test_lora_adapters_without_nim_peft_source_is_a_clear_error() -> None:
    with pytest.raises(ActorConfigError, match="NIM_PEFT_SOURCE"):
        NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", hf_repo_ids=["org/adapter"])


def test_lora_download_without_huggingface_hub_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    import importlib.util

    from nimflow.actors import containers

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "huggingface_hub" else real_find_spec(name, *a),
    )  # fmt: skip
    with pytest.raises(ActorConfigError, match="pip install huggingface_hub"):
        containers.fetch_adapters(("org/adapter",), home, "token")


def test_a_missing_ngc_key_names_the_secret_and_how_to_set_it() -> None:
    client = FakeClient(have_image=True)
    with pytest.raises(SecretMissingError) as info:
        start(client, NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"))
    message = str(info.value)
    assert "NGC_API_KEY" in message and "nimflow secret create NGC_API_KEY" in message
    assert "'nim-actor'" in message
    assert not any(c[0] == "run" for c in client.calls)


def test_vllm_command_env_and_lora_modules(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", HF)
    spec = VLLM(
        model="meta-llama/Llama-3.2-1B-Instruct",
        args=["--dtype=half", "--max-model-len=2000"],
        lora_modules={"orpo": "Samhita/OrpoLlama-3-8B-Instruct"},
    )
    client = FakeClient(have_image=True)
    port = free_port()
    start(client, spec, port=port)
    kwargs = client.run_kwargs()
    assert kwargs["image"] == spec.image and spec.image.startswith("vllm/vllm-openai:v")
    assert kwargs["command"] == [
        "--model", "meta-llama/Llama-3.2-1B-Instruct", "--host", "127.0.0.1", "--port", str(port),
        "--dtype=half", "--max-model-len=2000", "--enable-lora", "--lora-modules",
        "orpo=Samhita/OrpoLlama-3-8B-Instruct",
    ]  # fmt: skip
    assert kwargs["environment"]["HF_TOKEN"] == HF
    assert kwargs["volumes"] == {
        str(home / "cache" / "huggingface"): {"bind": "/root/.cache/huggingface", "mode": "rw"}
    }
    assert kwargs["device_requests"] == [DeviceRequest(count=1, capabilities=[["gpu"]])]
    assert HF not in repr(kwargs["labels"])
    assert spec.adapters() == ("orpo",)


def test_gpu_start_failure_is_clear_and_removes_the_created_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NGC_API_KEY", NGC)
    error = docker.errors.APIError(
        "500", explanation='could not select device driver "" with capabilities: [[gpu]]'
    )
    client = FakeClient(have_image=True, run_error=error)
    with pytest.raises(GPUUnavailableError) as info:
        start(client, NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"))
    assert "--server nim-actor=fake" in str(info.value)
    assert client.created["nimflow-nim-actor-0"].removed


def test_an_image_that_cannot_be_pulled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGC_API_KEY", NGC)
    client = FakeClient()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise docker.errors.APIError("500", explanation=f"unauthorized: bad key {NGC}")

    client.api.pull = refuse  # type: ignore[method-assign]
    with pytest.raises(ImageNotAvailableError) as info:
        start(client, NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"))
    assert NGC not in str(info.value)  # a registry echoing the key does not leak it
    assert not any(c[0] == "run" for c in client.calls)


def test_a_port_in_use_is_refused_before_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("NGC_API_KEY", NGC)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        client = FakeClient(have_image=True)
        with pytest.raises(PortInUseError, match=f"port {port}"):
            start(client, NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"), port=port)
    assert not any(c[0] == "run" for c in client.calls)


def test_no_docker_engine_names_the_alternatives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(DockerUnavailableError) as info:
        DockerLauncher().start(
            "nim-actor", 0, NIM(image="x:1", secrets=NIMSecrets(None, None)), port=free_port(), ttl=0
        )
    message = str(info.value)
    assert "no Docker engine answers" in message
    assert "--server nim-actor=fake" in message and "--server nim-actor=endpoint:URL" in message
