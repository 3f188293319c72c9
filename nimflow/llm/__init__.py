"""Model calls inside actor tasks: `chat`, `chat_many`, `extract`, `extract_many`, `current_actor`.

The clients behind them (routed over the actor's replicas, retried, metered) are built by the actor
pool; `use_actor(ctx)` makes a hand-built `ActorContext` current in unit tests.
"""

from nimflow.llm.chat import ChatResult, TokenUsage, chat, chat_many
from nimflow.llm.context import ActorContext, current_actor, use_actor
from nimflow.llm.extract import ExtractResult, extract, extract_many, response_format_for

__all__ = [
    "ActorContext",
    "ChatResult",
    "ExtractResult",
    "TokenUsage",
    "chat",
    "chat_many",
    "current_actor",
    "extract",
    "extract_many",
    "response_format_for",
    "use_actor",
]
