"""nimflow: async batch-inference workflows with cached tasks, map_task and warm model servers.

Names are imported on first use, so `import nimflow` (and the pytest plugin that every test run
of an installing project loads) does not pay for the database and HTTP stacks up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nimflow._context import current_run_id, session
    from nimflow._exceptions import (
        ActorConfigError,
        ActorError,
        AuthenticationError,
        BadRequestError,
        ContextLengthError,
        DockerUnavailableError,
        EndpointUnreachableError,
        ExtractionError,
        GPUUnavailableError,
        ImageNotAvailableError,
        LLMError,
        ModelCallError,
        ModelNotServedError,
        NimflowError,
        NoActorError,
        PortInUseError,
        RunFailedError,
        SecretMissingError,
        SerializationError,
        ServerExitedError,
        StartupTimeoutError,
        StorageError,
        TaskTimeoutError,
        UserInputError,
        WorkflowDefinitionError,
    )
    from nimflow._run import RunResult, arun, run
    from nimflow._task import TaskSpec, task
    from nimflow._workflow import WorkflowSpec, map_task, workflow
    from nimflow.actors import NIM, VLLM, ActorEnvironment, LocalProcess, NIMSecrets, OpenAIEndpoint
    from nimflow.actors.launchers.ray import Ray
    from nimflow.llm.context import current_actor
    from nimflow.secrets import Secret

_EXPORTS: dict[str, str] = {
    "ActorConfigError": "nimflow._exceptions",
    "ActorError": "nimflow._exceptions",
    "AuthenticationError": "nimflow._exceptions",
    "BadRequestError": "nimflow._exceptions",
    "ContextLengthError": "nimflow._exceptions",
    "DockerUnavailableError": "nimflow._exceptions",
    "EndpointUnreachableError": "nimflow._exceptions",
    "ExtractionError": "nimflow._exceptions",
    "GPUUnavailableError": "nimflow._exceptions",
    "ImageNotAvailableError": "nimflow._exceptions",
    "LLMError": "nimflow._exceptions",
    "ModelCallError": "nimflow._exceptions",
    "ModelNotServedError": "nimflow._exceptions",
    "NimflowError": "nimflow._exceptions",
    "NoActorError": "nimflow._exceptions",
    "PortInUseError": "nimflow._exceptions",
    "RunFailedError": "nimflow._exceptions",
    "SecretMissingError": "nimflow._exceptions",
    "SerializationError": "nimflow._exceptions",
    "ServerExitedError": "nimflow._exceptions",
    "StartupTimeoutError": "nimflow._exceptions",
    "StorageError": "nimflow._exceptions",
    "TaskTimeoutError": "nimflow._exceptions",
    "UserInputError": "nimflow._exceptions",
    "WorkflowDefinitionError": "nimflow._exceptions",
    "ActorEnvironment": "nimflow.actors",
    "NIM": "nimflow.actors",
    "VLLM": "nimflow.actors",
    "NIMSecrets": "nimflow.actors",
    "OpenAIEndpoint": "nimflow.actors",
    "LocalProcess": "nimflow.actors",
    "Ray": "nimflow.actors.launchers.ray",
    "Secret": "nimflow.secrets",
    "current_run_id": "nimflow._context",
    "current_actor": "nimflow.llm.context",
    "session": "nimflow._context",
    "RunResult": "nimflow._run",
    "arun": "nimflow._run",
    "run": "nimflow._run",
    "TaskSpec": "nimflow._task",
    "task": "nimflow._task",
    "WorkflowSpec": "nimflow._workflow",
    "map_task": "nimflow._workflow",
    "workflow": "nimflow._workflow",
}

__all__ = [
    "NIM",
    "VLLM",
    "ActorConfigError",
    "ActorEnvironment",
    "ActorError",
    "AuthenticationError",
    "BadRequestError",
    "ContextLengthError",
    "DockerUnavailableError",
    "EndpointUnreachableError",
    "ExtractionError",
    "GPUUnavailableError",
    "ImageNotAvailableError",
    "LLMError",
    "LocalProcess",
    "ModelCallError",
    "ModelNotServedError",
    "NIMSecrets",
    "NimflowError",
    "NoActorError",
    "OpenAIEndpoint",
    "PortInUseError",
    "Ray",
    "RunFailedError",
    "RunResult",
    "Secret",
    "SecretMissingError",
    "SerializationError",
    "ServerExitedError",
    "StartupTimeoutError",
    "StorageError",
    "TaskSpec",
    "TaskTimeoutError",
    "UserInputError",
    "WorkflowDefinitionError",
    "WorkflowSpec",
    "arun",
    "current_actor",
    "current_run_id",
    "map_task",
    "run",
    "session",
    "task",
    "workflow",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in ("llm", "actors", "testing"):
            return importlib.import_module(f"nimflow.{name}")
        raise AttributeError(f"module 'nimflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "llm", "actors", "testing"]
