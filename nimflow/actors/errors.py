"""Errors of the actor pool. Each names the actor and says what to do next; none carries a secret."""

from __future__ import annotations

from nimflow.errors import ActorError


def alternatives(actor: str) -> str:
    """How to run a pipeline without a local GPU server."""
    return (
        f"To run without it, serve the actor another way: `nimflow run ... --server {actor}=fake` "
        f"(the fake OpenAI server) or `--server {actor}=endpoint:URL` (a server that already runs)."
    )


class DockerUnavailableError(ActorError):
    """No Docker engine answers."""


class ImageNotAvailableError(ActorError):
    """The image is not on this machine and could not be pulled."""


class GPUUnavailableError(ActorError):
    """The server asks for a GPU and the engine has no NVIDIA runtime."""


class SecretMissingError(ActorError):
    """A secret the server needs is neither in the environment nor in the secret store."""


class PortInUseError(ActorError):
    """The port a replica should listen on is already taken by something else."""


class ServerExitedError(ActorError):
    """The server's container or process exited while starting."""

    def __init__(self, message: str, exit_code: int | None, log_tail: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail


class StartupTimeoutError(ActorError):
    """The server did not become healthy before its startup deadline."""


class ModelNotServedError(ActorError):
    """The server is up but `/v1/models` does not list the expected model or adapters."""


class ActorConfigError(ActorError):
    """A server spec that cannot work as written (e.g. LoRA adapters without NIM_PEFT_SOURCE)."""
