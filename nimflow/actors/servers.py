"""Server specs: what serves an actor's OpenAI-compatible API.

Specs are plain frozen values. They know their identity (what served an answer, for cache keys),
a config hash (to tell whether a running replica still matches), and nothing about how they are
started: that is the launchers' job. What they all offer is ServerSpec (spec.py).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from nimflow._exceptions import ActorConfigError
from nimflow.actors.spec import Kind, ServerSpec, parse_quantity
from nimflow.secrets import Secret, secret_name

__all__ = [
    "NIM",
    "VLLM",
    "Container",
    "FakeOpenAI",
    "LocalProcess",
    "NIMSecrets",
    "OpenAIEndpoint",
    "ServerSpec",
    "parse_quantity",
]

VLLM_IMAGE = "vllm/vllm-openai:v0.8.5"


@dataclass(frozen=True)
class NIMSecrets:
    """Names of the secrets a NIM container needs (looked up in the environment or the secret store)."""

    ngc_api_key: str | None = "NGC_API_KEY"
    hf_token: str | None = "HF_TOKEN"


@dataclass(frozen=True)
class NIM(ServerSpec):
    """An NVIDIA NIM container. `port` is the host port of replica 0 (replica i uses port + i;
    0 picks free ports)."""

    kind: ClassVar[Kind] = "docker"
    image: str
    secrets: NIMSecrets = field(default_factory=NIMSecrets)
    model: str | None = None
    port: int = 8000
    gpu: int | Literal["all"] = 1
    cpu: float | None = None
    mem: str | int | None = "20Gi"
    shm_size: str | int | None = "16Gi"
    env: Mapping[str, str] = field(default_factory=dict)
    hf_repo_ids: Sequence[str] = ()
    health_endpoint: str | None = "/v1/health/ready"
    startup_timeout: float = 1800.0  # the first start downloads the model
    pull: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", dict(self.env))
        object.__setattr__(self, "hf_repo_ids", tuple(self.hf_repo_ids))
        if self.hf_repo_ids and not self.env.get("NIM_PEFT_SOURCE"):
            raise ActorConfigError(
                f"NIM {self.image}: hf_repo_ids {list(self.hf_repo_ids)} are LoRA adapters, and NIM loads "
                "them from the folder named by NIM_PEFT_SOURCE; add "
                "env={'NIM_PEFT_SOURCE': '/home/nvs/loras'} (any path inside the container)."
            )
        if self.hf_repo_ids and (self.secrets.hf_token is None):
            raise ActorConfigError(
                f"NIM {self.image}: hf_repo_ids need a Hugging Face token to download; "
                "set NIMSecrets(hf_token='HF_TOKEN')."
            )
        parse_quantity(self.mem)
        parse_quantity(self.shm_size)

    def model_name(self) -> str | None:
        return self.model

    def default_model_name(self) -> str:
        """The name NIM serves its model under, guessed from the image (nvcr.io/nim/meta/x:1 -> meta/x)."""
        if self.model:
            return self.model
        path = self.image.split(":")[0]
        parts = path.split("/")
        if parts and "." in parts[0]:
            parts = parts[1:]  # registry host
        if parts and parts[0] == "nim":
            parts = parts[1:]
        return "/".join(parts[-2:]) if parts else path

    def adapters(self) -> tuple[str, ...]:
        # NIM serves each adapter under its folder's name inside NIM_PEFT_SOURCE.
        return tuple(repo.rstrip("/").split("/")[-1] for repo in self.hf_repo_ids)

    def identity(self) -> str:
        return f"nim:{self.image}:{self.model or ''}:{','.join(self.adapters())}"

    def describe(self) -> str:
        return f"NIM {self.image}"


@dataclass(frozen=True)
class VLLM(ServerSpec):
    """A vLLM OpenAI server container (`vllm/vllm-openai`).

    `lora_modules` maps an adapter name to its Hugging Face repo or a path inside the container."""

    kind: ClassVar[Kind] = "docker"
    model: str
    image: str = VLLM_IMAGE
    args: Sequence[str] = ()
    port: int = 8000
    gpu: int | Literal["all"] = 1
    hf_token: str | None = "HF_TOKEN"
    lora_modules: Mapping[str, str] = field(default_factory=dict)
    cpu: float | None = None
    mem: str | int | None = None
    shm_size: str | int | None = "8Gi"
    env: Mapping[str, str] = field(default_factory=dict)
    health_endpoint: str | None = "/health"
    startup_timeout: float = 1800.0
    pull: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "lora_modules", dict(self.lora_modules))
        object.__setattr__(self, "env", dict(self.env))
        parse_quantity(self.mem)
        parse_quantity(self.shm_size)

    def model_name(self) -> str:
        for arg in self.args:  # vLLM serves under --served-model-name when given
            if arg.startswith("--served-model-name="):
                return arg.split("=", 1)[1].split()[0]
        return self.model

    def adapters(self) -> tuple[str, ...]:
        return tuple(self.lora_modules)

    def identity(self) -> str:
        lora = ",".join(f"{k}={v}" for k, v in sorted(self.lora_modules.items()))
        return f"vllm:{self.image}:{self.model}:{' '.join(self.args)}:{lora}"

    def describe(self) -> str:
        return f"vLLM {self.image} serving {self.model}"


@dataclass(frozen=True)
class Container(ServerSpec):
    """Any OpenAI-compatible server image (SGLang, TGI, llama.cpp's server, Ollama, a team's own).

    `port` is where the server listens (and the host port of replica 0; replica i uses port + i).
    Under host networking every replica listens on its own port: write `{port}` in `args` (or
    `command`) and/or name an env var in `port_env` that the image reads its port from.
    `secrets` are secret names given to the container as env vars of the same name; `volumes`
    maps host paths to container paths; `labels` are added beside nimflow's own."""

    kind: ClassVar[Kind] = "docker"
    image: str
    command: str | Sequence[str] | None = None
    args: Sequence[str] = ()
    port: int = 8000
    port_env: str | None = None
    health_endpoint: str | None = "/health"
    model: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Sequence[str] = ()
    gpu: int | Literal["all"] = 0
    cpu: float | None = None
    mem: str | int | None = None
    shm_size: str | int | None = None
    volumes: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    startup_timeout: float = 600.0
    pull: bool = True

    def __post_init__(self) -> None:
        if self.command is not None and not isinstance(self.command, str):
            object.__setattr__(self, "command", tuple(self.command))
        for name in ("args", "secrets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("env", "volumes", "labels"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        taken = [k for k in self.labels if k.startswith("nimflow.")]
        if taken:
            raise ActorConfigError(
                f"Container {self.image}: the labels {taken} start with 'nimflow.', which nimflow keeps for its "
                "own (actor, replica, config, port); give them another prefix."
            )
        shared = sorted(set(self.secrets) & set(self.env))
        if shared:
            raise ActorConfigError(
                f"Container {self.image}: {shared} is both in env= and in secrets=; keep secrets in secrets= only."
            )
        parse_quantity(self.mem)
        parse_quantity(self.shm_size)

    def _parts(self) -> list[str]:
        head = shlex.split(self.command) if isinstance(self.command, str) else list(self.command or ())
        return [*head, *self.args]

    def argv(self, port: int) -> list[str] | None:
        """The container's command with `{port}` replaced; None keeps the image's own."""
        return [p.replace("{port}", str(port)) for p in self._parts()] or None

    def follows_port(self) -> bool:
        """Whether each replica can be told its own port (needed under host networking)."""
        return self.port_env is not None or any("{port}" in p for p in self._parts())

    def model_name(self) -> str | None:
        return self.model

    def identity(self) -> str:
        return f"container:{self.image}:{self.model or ''}:{shlex.join(self._parts())}"

    def describe(self) -> str:
        return f"container {self.image}" + (f" serving {self.model}" if self.model else "")


@dataclass(frozen=True)
class OpenAIEndpoint(ServerSpec):
    """A server that already runs (docker-compose, a hosted catalog).

    `api_key=nf.Secret("NAME")` names the secret holding the key (the environment or `nimflow
    secret create NAME`); the key itself is never written in a pipeline."""

    kind: ClassVar[Kind] = "endpoint"
    base_url: str
    api_key: str | Secret | None = None
    model: str | None = None
    health_endpoint: str | None = None
    startup_timeout: float = 30.0

    @property
    def owned(self) -> bool:
        return False

    def __post_init__(self) -> None:
        if not re.match(r"^https?://", self.base_url):
            raise ActorConfigError(f"endpoint {self.base_url!r} must start with http:// or https://.")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.api_key is not None:  # kept as the name: hashes and messages see names only
            object.__setattr__(self, "api_key", secret_name(self.api_key, flag="OpenAIEndpoint(api_key=...)"))

    @property
    def api_key_name(self) -> str | None:
        return None if self.api_key is None else str(self.api_key)

    def model_name(self) -> str | None:
        return self.model

    def identity(self) -> str:
        return f"endpoint:{self.model or ''}"  # what answers, not where: a moved port keeps the cache

    def describe(self) -> str:
        return f"endpoint {self.base_url}"


@dataclass(frozen=True)
class LocalProcess(ServerSpec):
    """A server run as a subprocess. `{port}` in the command is replaced by the replica's port
    (also given as $PORT); port=0 picks a free one, otherwise replica i uses port + i."""

    kind: ClassVar[Kind] = "process"
    command: str | Sequence[str]
    port: int = 0
    health_endpoint: str | None = "/health"
    model: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    gpu: int = 0  # what a Ray placement asks the cluster for
    startup_timeout: float = 600.0

    def __post_init__(self) -> None:
        if not isinstance(self.command, str):
            object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", dict(self.env))
        if not self.argv():
            raise ActorConfigError("LocalProcess needs a command.")

    def argv(self, port: int | None = None) -> list[str]:
        argv = shlex.split(self.command) if isinstance(self.command, str) else list(self.command)
        if port is not None:
            argv = [a.replace("{port}", str(port)) for a in argv]
        return argv

    def model_name(self) -> str | None:
        return self.model

    def identity(self) -> str:
        return f"process:{self.model}" if self.model else f"process:{shlex.join(self.argv())}"

    def describe(self) -> str:
        return f"local process `{shlex.join(self.argv())}`"


@dataclass(frozen=True)
class FakeOpenAI(ServerSpec):
    """The fake OpenAI server of nimflow.testing, started as a subprocess for one run."""

    kind: ClassVar[Kind] = "fake"
    model: str
    adapter_names: Sequence[str] = ()
    latency_ms: float = 0.0
    health_endpoint: str | None = "/v1/health/ready"
    startup_timeout: float = 60.0

    @property
    def shared(self) -> bool:
        return False  # a fake server belongs to the run that started it

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter_names", tuple(self.adapter_names))

    def model_name(self) -> str:
        return self.model

    def adapters(self) -> tuple[str, ...]:
        return tuple(self.adapter_names)

    def identity(self) -> str:
        return f"fake:{self.model}:{','.join(self.adapter_names)}"

    def describe(self) -> str:
        return "fake server (answers are not from a model)"
