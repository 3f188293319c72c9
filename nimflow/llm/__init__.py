"""Model calls inside actor tasks: `chat`, `chat_many`, `extract`, `extract_many`, `batch` (OpenAI
Batch request lines), `current_actor`.

The clients behind them (routed over the actor's replicas, retried, metered) are built by the actor
pool; `use_actor(ctx)` makes a hand-built `ActorContext` current in unit tests.
"""

from typing import TYPE_CHECKING, Any

from nimflow.llm.chat import ChatResult, TokenUsage, chat, chat_many
from nimflow.llm.context import ActorContext, current_actor, use_actor
from nimflow.llm.extract import ExtractResult, extract, extract_many, response_format_for

__all__ = [
    "ActorContext",
    "ChatResult",
    "ExtractResult",
    "TokenUsage",
    "batch",
    "chat",
    "chat_many",
    "current_actor",
    "extract",
    "extract_many",
    "response_format_for",
    "use_actor",
]

if TYPE_CHECKING:
    from nimflow.batch._send import batch


def __getattr__(name: str) -> Any:
    # Imported on first use: nimflow.batch builds on this package, not the other way round.
    if name == "batch":
        from nimflow.batch._send import batch

        return batch
    raise AttributeError(f"module 'nimflow.llm' has no attribute {name!r}")
