"""OpenAI-client wiring for actor tasks: routed, retried, metered, structured calls."""

from nimflow._exceptions import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    EndpointUnreachableError,
    ExtractionError,
    ModelCallError,
    ModelNotServedError,
    NoActorError,
)
from nimflow.llm.chat import ChatResult, TokenUsage, chat, chat_many
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.context import ActorContext, current_actor, use_actor
from nimflow.llm.extract import ExtractResult, extract, extract_many, response_format_for
from nimflow.llm.retry import RetryPolicy, should_retry
from nimflow.llm.usage import Usage, meter

__all__ = [
    "ActorContext",
    "AuthenticationError",
    "BadRequestError",
    "ChatResult",
    "ContextLengthError",
    "EndpointUnreachableError",
    "ExtractResult",
    "ExtractionError",
    "ModelCallError",
    "ModelNotServedError",
    "NoActorError",
    "RetryPolicy",
    "TokenUsage",
    "Usage",
    "build_actor_context",
    "chat",
    "chat_many",
    "close_actor_context",
    "current_actor",
    "extract",
    "extract_many",
    "meter",
    "response_format_for",
    "should_retry",
    "use_actor",
]
