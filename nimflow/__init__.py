"""nimflow: async batch-inference workflows with cached tasks, map_task and warm model servers."""

from nimflow._context import current_run_id, session
from nimflow._run import RunResult, arun, run
from nimflow._task import TaskSpec, task
from nimflow._workflow import WorkflowSpec, map_task, workflow
from nimflow.errors import (
    ActorError,
    LLMError,
    NimflowError,
    RunFailedError,
    SerializationError,
    TaskFailedError,
    UserInputError,
    WorkflowDefinitionError,
)

__all__ = [
    "ActorError",
    "LLMError",
    "NimflowError",
    "RunFailedError",
    "RunResult",
    "SerializationError",
    "TaskFailedError",
    "TaskSpec",
    "UserInputError",
    "WorkflowDefinitionError",
    "WorkflowSpec",
    "arun",
    "current_run_id",
    "map_task",
    "run",
    "session",
    "task",
    "workflow",
]
