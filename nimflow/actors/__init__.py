"""The warm actor pool: model servers (NIM, vLLM, endpoints, local processes) for actor tasks."""

from nimflow._exceptions import (
    ActorConfigError,
    DockerUnavailableError,
    GPUUnavailableError,
    ImageNotAvailableError,
    ModelNotServedError,
    PortInUseError,
    SecretMissingError,
    ServerExitedError,
    StartupTimeoutError,
)
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.overrides import parse_server_override
from nimflow.actors.pool import ActorSession
from nimflow.actors.servers import NIM, VLLM, FakeOpenAI, LocalProcess, NIMSecrets, OpenAIEndpoint, ServerSpec

__all__ = [
    "NIM",
    "VLLM",
    "ActorConfigError",
    "ActorEnvironment",
    "ActorSession",
    "DockerUnavailableError",
    "FakeOpenAI",
    "GPUUnavailableError",
    "ImageNotAvailableError",
    "LocalProcess",
    "ModelNotServedError",
    "NIMSecrets",
    "OpenAIEndpoint",
    "PortInUseError",
    "SecretMissingError",
    "ServerExitedError",
    "ServerSpec",
    "StartupTimeoutError",
    "parse_server_override",
]
