"""One exception tree, rooted at NimflowError. Every message says what to do next."""

from __future__ import annotations


class NimflowError(Exception):
    """Base of every error nimflow raises on purpose."""


class UserInputError(NimflowError):
    """Bad input from the user: a file, a workflow name, a CLI value."""


class WorkflowDefinitionError(NimflowError):
    """A workflow body that cannot be turned into a graph (promise misuse, recursion, bad output)."""


class SerializationError(NimflowError):
    """A value that cannot be turned into JSON from its type hint, or back."""


class TaskFailedError(NimflowError):
    """A task raised; the message carries the task name and the original error."""


class RunFailedError(NimflowError):
    """A run ended with failed nodes. `.run_id` names the run for `nimflow show`."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class ActorError(NimflowError):
    """An actor's model server could not be started, found, reached or stopped."""


class LLMError(NimflowError):
    """A model call that failed for good (after retries, or not retryable)."""
