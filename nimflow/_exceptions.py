"""Every exception nimflow raises on purpose, in one tree. Each message says what to do next and
never carries a secret.

    NimflowError
    ├── UserInputError                 a bad file, workflow name, CLI value or setting
    │   └── SecretMissingError         a secret neither in the environment nor the secret store
    ├── WorkflowDefinitionError        a workflow body that cannot become a graph
    ├── SerializationError             a value that does not fit its type hint
    ├── MapInputError                  a map_task's mapped inputs are not lists of one length
    ├── StorageError                   the database cannot be opened, written or read
    ├── TaskTimeoutError               a task ran past its `timeout`
    ├── RunFailedError                 a run ended with failed nodes (`.run_id`, `.result`)
    ├── RunCancelledError              a run stopped by `nimflow kill` (`.run_id`, `.result`)
    ├── NoActorError                   `nf.current_actor()` outside an actor task
    ├── ActorError                     a model server could not be started, found, reached, stopped
    │   ├── DockerUnavailableError
    │   ├── ImageNotAvailableError
    │   ├── GPUUnavailableError
    │   ├── PortInUseError
    │   ├── ServerExitedError          `.exit_code`, `.log_tail`
    │   ├── StartupTimeoutError
    │   ├── ActorConfigError
    │   └── ModelNotServedError        also a ModelCallError: at start-up or on a call's 404
    └── LLMError                       a model call that failed for good
        └── ModelCallError             `.item_id`, `.status_code`
            ├── EndpointUnreachableError
            ├── MalformedResponseError
            ├── AuthenticationError
            ├── ContextLengthError
            ├── BadRequestError
            ├── ExtractionError
            └── ModelNotServedError
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorConfigError",
    "ActorError",
    "AuthenticationError",
    "BadRequestError",
    "BatchRequestError",
    "ContextLengthError",
    "DockerUnavailableError",
    "EndpointUnreachableError",
    "ExtractionError",
    "GPUUnavailableError",
    "ImageNotAvailableError",
    "LLMError",
    "MalformedResponseError",
    "MapInputError",
    "ModelCallError",
    "ModelNotServedError",
    "NimflowError",
    "NoActorError",
    "PortInUseError",
    "RunCancelledError",
    "RunFailedError",
    "SecretMissingError",
    "SerializationError",
    "ServerExitedError",
    "StartupTimeoutError",
    "StorageError",
    "TaskTimeoutError",
    "UserInputError",
    "WorkflowDefinitionError",
]


class NimflowError(Exception):
    """Base of every error nimflow raises on purpose."""


# -- the user's input and definitions -------------------------------------------------------------


class UserInputError(NimflowError):
    """Bad input from the user: a file, a workflow name, a CLI value, a setting."""


class SecretMissingError(UserInputError):
    """A secret that is neither in the environment nor in the secret store."""

    def __init__(self, name: str, needed_by: str = "", hint: str = "") -> None:
        who = f"{needed_by} needs the secret {name}" if needed_by else f"the secret {name} is needed"
        message = (
            f"{who}, which is not set. Set it in the environment (export {name}=...) "
            f"or store it with `nimflow secret create {name}`."
        )
        super().__init__(f"{message} {hint}".rstrip())
        self.name = name


class WorkflowDefinitionError(NimflowError):
    """A workflow body that cannot be turned into a graph (promise misuse, recursion, bad output)."""


class SerializationError(NimflowError):
    """A value that cannot be turned into JSON from its type hint, or back."""


class MapInputError(NimflowError):
    """A map_task's mapped inputs are not lists, or not all of one length."""


class StorageError(NimflowError):
    """The database cannot be opened, written or read (the message names the setting to fix)."""


# -- runs -------------------------------------------------------------------------------------------


class TaskTimeoutError(NimflowError):
    """A task ran longer than its `timeout`."""


class RunFailedError(NimflowError):
    """A run ended with failed nodes. `.run_id` names the run for `nimflow show`; `.result` is
    the RunResult with the failures."""

    def __init__(self, message: str, run_id: str, result: Any = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.result = result


class RunCancelledError(NimflowError):
    """A run stopped from outside (`nimflow kill`) before it ended; what finished is saved.
    (Ctrl-C stays a KeyboardInterrupt.) `.run_id` names the run; `.result` is its RunResult."""

    def __init__(self, message: str, run_id: str, result: Any = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.result = result


# -- actors and model calls -------------------------------------------------------------------------


class NoActorError(NimflowError):
    """`nf.current_actor()` outside an actor task."""


class ActorError(NimflowError):
    """An actor's model server could not be started, found, reached or stopped."""


class DockerUnavailableError(ActorError):
    """No Docker engine answers."""


class ImageNotAvailableError(ActorError):
    """The image is not on this machine and could not be pulled."""


class GPUUnavailableError(ActorError):
    """The server asks for GPUs the host does not have free (or the engine has no NVIDIA runtime)."""


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


class ActorConfigError(ActorError):
    """A server spec that cannot work as written (e.g. LoRA adapters without NIM_PEFT_SOURCE)."""


class LLMError(NimflowError):
    """A model call that failed for good (after retries, or not retryable)."""


class ModelCallError(LLMError):
    """A model call failed for good; `.item_id` names the item (None for a single call)."""

    def __init__(self, message: str, *, item_id: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.item_id = item_id
        self.status_code = status_code


class BatchRequestError(ModelCallError):
    """A Batch file request got no usable answer (429/5xx after retries, no connection, a body
    that is not JSON); reported on its output line and sent again by a rerun."""


class EndpointUnreachableError(ModelCallError):
    """No replica accepted a connection (or answered in time), even after retries."""


class MalformedResponseError(ModelCallError):
    """The server kept answering a call with a body that is not the JSON asked for (an HTML page, a
    cut-off body)."""


class AuthenticationError(ModelCallError):
    """The server rejected the API key (401/403)."""


class ContextLengthError(ModelCallError):
    """The prompt (plus max_tokens) is longer than the model's context (400)."""


class BadRequestError(ModelCallError):
    """The server rejected the request as invalid (400/422) for another reason."""


class ExtractionError(ModelCallError):
    """The model's output did not satisfy the schema, even with a larger token budget."""


class ModelNotServedError(ModelCallError, ActorError):
    """The server does not serve the model or adapter asked for: `/v1/models` lacks it at start-up,
    or a call answered 404."""
