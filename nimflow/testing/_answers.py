"""Deterministic answers made from the input's own text.

Tokens are whitespace-separated words: ``len(text.split())``. It is cheap, deterministic and
close enough to real tokenizers for limits and accounting to behave like a real server.

A summary is the first sentences of the *content* of the prompt: a leading (or trailing) short
paragraph that reads like an instruction ("Summarize the following paper:") is left out, so
the answer quotes the document rather than the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

SUMMARY_SENTENCES = 3
SUMMARY_MAX_WORDS = 120
FALLBACK_ANSWER = "OK."

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"\S+")
_PIECE = re.compile(r"\s*\S+")
_INSTRUCTION = re.compile(
    r"\b(summari[sz]e|summary|extract|identify|classify|translate|answer|respond|return|"
    r"list|find|give|write|read|following|below|above|json|entities)\b",
    re.IGNORECASE,
)
_INSTRUCTION_MAX_WORDS = 60


def count_tokens(text: str) -> int:
    return len(text.split())


def cut_tokens(text: str, limit: int) -> str:
    """The text up to the end of its ``limit``-th word, original spacing kept."""
    if limit <= 0:
        return ""
    end = 0
    for i, match in enumerate(_WORD.finditer(text), start=1):
        end = match.end()
        if i == limit:
            break
    return text[:end]


def pieces(text: str) -> list[str]:
    """Stream chunks: one per word, each with its leading whitespace, so they join back."""
    return _PIECE.findall(text)


def content_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def chat_prompt(messages: list[Any]) -> tuple[str, int]:
    """The last user message's text (what the answer is made from) and the prompt's token count."""
    last_user = ""
    tokens = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))
        tokens += count_tokens(text)
        if message.get("role") == "user":
            last_user = text
    return last_user, tokens


def _looks_like_instruction(paragraph: str) -> bool:
    stripped = paragraph.strip()
    if count_tokens(stripped) > _INSTRUCTION_MAX_WORDS:
        return False
    return stripped.endswith(":") or _INSTRUCTION.search(stripped) is not None


def document_text(text: str) -> str:
    """The prompt without a leading or trailing instruction paragraph (when one can be told apart)."""
    paragraphs = [p for p in _PARAGRAPHS.split(text) if p.strip()]
    if len(paragraphs) == 1:
        # "Summarize this:\n<document>" on one paragraph: split off the first line.
        head, newline, rest = paragraphs[0].partition("\n")
        if newline and rest.strip() and head.strip().endswith(":"):
            return rest
        return paragraphs[0] if paragraphs else ""
    if len(paragraphs) > 1 and _looks_like_instruction(paragraphs[0]):
        paragraphs = paragraphs[1:]
    if len(paragraphs) > 1 and _looks_like_instruction(paragraphs[-1]):
        paragraphs = paragraphs[:-1]
    return "\n\n".join(paragraphs)


def iter_sentences(text: str) -> Iterator[str]:
    """Sentences with whitespace collapsed, lazily (documents can be long)."""
    start = 0
    for match in _SENTENCE_END.finditer(text):
        sentence = " ".join(text[start : match.end()].split())
        start = match.end()
        if sentence:
            yield sentence
    tail = " ".join(text[start:].split())
    if tail:
        yield tail


def summarize(text: str) -> str:
    """The first sentences of the document part of ``text``, capped in words."""
    chosen: list[str] = []
    words = 0
    for sentence in iter_sentences(document_text(text)):
        chosen.append(sentence)
        words += count_tokens(sentence)
        if len(chosen) >= SUMMARY_SENTENCES or words >= SUMMARY_MAX_WORDS:
            break
    summary = " ".join(chosen)
    if words > SUMMARY_MAX_WORDS:
        summary = cut_tokens(summary, SUMMARY_MAX_WORDS)
    return summary or FALLBACK_ANSWER
