"""nimflow: async batch-inference workflows with cached tasks, map_task and warm model servers.

Names are imported on first use, so `import nimflow` (and the pytest plugin that every test run
of an installing project loads) does not pay for the database and HTTP stacks up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nimflow._artifacts import Artifact
    from nimflow._context import current_run_id, session
    from nimflow._exceptions import (
        ActorConfigError,
        ActorError,
        AuthenticationError,
        BadRequestError,
        BatchRequestError,
        ContextLengthError,
        DockerUnavailableError,
        EndpointUnreachableError,
        ExtractionError,
        GPUUnavailableError,
        ImageNotAvailableError,
        LLMError,
        MalformedResponseError,
        MapInputError,
        ModelCallError,
        ModelNotServedError,
        NimflowError,
        NoActorError,
        PortInUseError,
        RunCancelledError,
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
    from nimflow._launchplans import Cron, FixedRate, LaunchPlan, OnArtifact
    from nimflow._run import RunResult, arun, run, workflow
    from nimflow._task import TaskSpec, task
    from nimflow._workflow import WorkflowSpec, map_task
    from nimflow.actors.environment import ActorEnvironment
    from nimflow.actors.launchers.ray import Ray
    from nimflow.actors.servers import NIM, VLLM, Container, LocalProcess, NIMSecrets, OpenAIEndpoint
    from nimflow.llm.context import current_actor
    from nimflow.secrets import Secret

_EXPORTS: dict[str, str] = {
    "Artifact": "nimflow._artifacts",
    "Cron": "nimflow._launchplans",
    "FixedRate": "nimflow._launchplans",
    "LaunchPlan": "nimflow._launchplans",
    "OnArtifact": "nimflow._launchplans",
    "ActorConfigError": "nimflow._exceptions",
    "ActorError": "nimflow._exceptions",
    "AuthenticationError": "nimflow._exceptions",
    "BatchRequestError": "nimflow._exceptions",
    "BadRequestError": "nimflow._exceptions",
    "ContextLengthError": "nimflow._exceptions",
    "DockerUnavailableError": "nimflow._exceptions",
    "EndpointUnreachableError": "nimflow._exceptions",
    "ExtractionError": "nimflow._exceptions",
    "GPUUnavailableError": "nimflow._exceptions",
    "ImageNotAvailableError": "nimflow._exceptions",
    "LLMError": "nimflow._exceptions",
    "MapInputError": "nimflow._exceptions",
    "MalformedResponseError": "nimflow._exceptions",
    "ModelCallError": "nimflow._exceptions",
    "ModelNotServedError": "nimflow._exceptions",
    "NimflowError": "nimflow._exceptions",
    "NoActorError": "nimflow._exceptions",
    "PortInUseError": "nimflow._exceptions",
    "RunCancelledError": "nimflow._exceptions",
    "RunFailedError": "nimflow._exceptions",
    "SecretMissingError": "nimflow._exceptions",
    "SerializationError": "nimflow._exceptions",
    "ServerExitedError": "nimflow._exceptions",
    "StartupTimeoutError": "nimflow._exceptions",
    "StorageError": "nimflow._exceptions",
    "TaskTimeoutError": "nimflow._exceptions",
    "UserInputError": "nimflow._exceptions",
    "WorkflowDefinitionError": "nimflow._exceptions",
    "ActorEnvironment": "nimflow.actors.environment",
    "NIM": "nimflow.actors.servers",
    "VLLM": "nimflow.actors.servers",
    "Container": "nimflow.actors.servers",
    "NIMSecrets": "nimflow.actors.servers",
    "OpenAIEndpoint": "nimflow.actors.servers",
    "LocalProcess": "nimflow.actors.servers",
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
    "workflow": "nimflow._run",
}

__all__ = [
    "NIM",
    "VLLM",
    "ActorConfigError",
    "ActorEnvironment",
    "ActorError",
    "Artifact",
    "AuthenticationError",
    "BadRequestError",
    "BatchRequestError",
    "Container",
    "ContextLengthError",
    "Cron",
    "DockerUnavailableError",
    "EndpointUnreachableError",
    "ExtractionError",
    "FixedRate",
    "GPUUnavailableError",
    "ImageNotAvailableError",
    "LLMError",
    "LaunchPlan",
    "LocalProcess",
    "MalformedResponseError",
    "MapInputError",
    "ModelCallError",
    "ModelNotServedError",
    "NIMSecrets",
    "NimflowError",
    "NoActorError",
    "OnArtifact",
    "OpenAIEndpoint",
    "PortInUseError",
    "Ray",
    "RunCancelledError",
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


# Public subpackages, reachable as attributes without their own import: nf.llm.chat_many, nf.testing.
_SUBMODULES = ("llm", "testing")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in _SUBMODULES:
            return importlib.import_module(f"nimflow.{name}")
        raise AttributeError(f"module 'nimflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, *_SUBMODULES]
