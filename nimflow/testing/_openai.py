"""OpenAI-compatible bodies: answers, stream chunks and the error bodies real servers send."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from ._answers import chat_prompt, count_tokens, cut_tokens, summarize
from ._schema import schema_instance

FINGERPRINT = "nimflow-fake"
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    return _encode(value).encode()


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI error body."""

    def __init__(self, status: int, message: str, type_: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code if code is not None else status

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type_: str, code: int | str | None, param: str | None = None) -> bytes:
    # OpenAI's shape ({"error": {...}}) plus vLLM's top-level "object": "error".
    return dumps(
        {"object": "error", "error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def unknown_model(model: str) -> RequestError:
    return RequestError(404, f"The model `{model}` does not exist.", "NotFoundError")


def bad_request(message: str) -> RequestError:
    return RequestError(400, message, "BadRequestError")


def context_too_long(max_len: int, prompt: int, completion: int | None) -> RequestError:
    # vLLM's wording, so callers that parse it keep working against the fake.
    if completion is None:
        detail = (
            f"However, you requested {prompt} tokens in the messages, "
            "Please reduce the length of the messages."
        )
    else:
        detail = (
            f"However, you requested {prompt + completion} tokens ({prompt} in the messages, "
            f"{completion} in the completion). Please reduce the length of the messages or completion."
        )
    return bad_request(f"This model's maximum context length is {max_len} tokens. {detail}")


def unauthorized(given: str | None) -> RequestError:
    if not given:
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return RequestError(401, message, "invalid_request_error", "invalid_api_key")
    shown = f"{given[:3]}...{given[-4:]}" if len(given) > 8 else "*" * len(given)
    return RequestError(
        401, f"Incorrect API key provided: {shown}.", "invalid_request_error", "invalid_api_key"
    )


RATE_LIMITED = error_body(
    "Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"
)
SERVER_ERROR = error_body(
    "The server had an error while processing your request. Sorry about that!", "server_error", None
)
UNAVAILABLE = error_body("The engine is currently overloaded, please try again later.", "server_error", None)
HTML = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
MALFORMED = b'{"id": "chatcmpl-fake", "object": "chat.completion", "choices": [{"index": 0, "mess<html>502'


@dataclass(slots=True)
class Answer:
    """What the model "generated" for one choice."""

    text: str
    finish_reason: str
    tokens: int


@dataclass(slots=True)
class Job:
    """A validated inference request, ready to answer."""

    chat: bool
    model: str
    prompts: list[str]  # chat: one (the last user message); completions: one per prompt
    prompt_tokens: int
    max_tokens: int | None
    schema: Any  # a JSON schema, {} for json_object, None for free text
    n: int
    stream: bool
    include_usage: bool


def parse_job(body: Any, chat: bool, models: frozenset[str], default_model: str, max_model_len: int) -> Job:
    """Validate an inference body; raises RequestError with the status a real server uses."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model") or default_model
    if not isinstance(model, str) or model not in models:
        raise unknown_model(str(model))
    schema: Any = None
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty list of messages.")
        text, prompt_tokens = chat_prompt(messages)
        prompts = [text]
        response_format = body.get("response_format")
        if isinstance(response_format, dict):
            if response_format.get("type") == "json_schema":
                spec = response_format.get("json_schema") or {}
                schema = spec.get("schema") if isinstance(spec, dict) else None
                schema = schema if isinstance(schema, dict) else {}
            elif response_format.get("type") == "json_object":
                schema = {}
        if isinstance(body.get("guided_json"), dict):  # vLLM's extra parameter
            schema = body["guided_json"]
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            prompts = [" ".join(map(str, prompt))]  # token ids: one word each
        else:
            raise bad_request("'prompt' must be a string, a list of strings or a list of token ids.")
        prompt_tokens = max(count_tokens(p) for p in prompts)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise bad_request(f"max_tokens must be at least 1, got {max_tokens!r}.")
    if prompt_tokens + (max_tokens or 0) > max_model_len:
        raise context_too_long(max_model_len, prompt_tokens, max_tokens)
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise bad_request(f"n must be between 1 and 128, got {n!r}.")
    options = body.get("stream_options")
    return Job(
        chat=chat,
        model=model,
        prompts=prompts,
        prompt_tokens=prompt_tokens if chat else sum(count_tokens(p) for p in prompts),
        max_tokens=max_tokens if max_tokens is not None else max_model_len - prompt_tokens,
        schema=schema,
        n=n,
        stream=bool(body.get("stream")),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
    )


def answer(job: Job, prompt: str, truncate: bool) -> Answer:
    """The deterministic answer to one prompt; ``truncate`` cuts it in half (the fault)."""
    if job.schema is None:
        text = summarize(prompt)
    elif job.schema:
        text = json.dumps(schema_instance(job.schema, prompt), ensure_ascii=False)
    else:
        text = json.dumps({"summary": summarize(prompt)}, ensure_ascii=False)
    tokens = count_tokens(text)
    limit = job.max_tokens
    if truncate:
        text = text[: len(text) // 2]
        return Answer(text, "length", count_tokens(text))
    if limit is not None and tokens > limit:
        text = cut_tokens(text, limit)
        return Answer(text, "length", limit)
    return Answer(text, "stop", tokens)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(job: Job, request_id: str, answers: list[Answer]) -> bytes:
    created = int(time.time())
    completion_tokens = sum(a.tokens for a in answers)
    if job.chat:
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": a.text, "refusal": None, "tool_calls": []},
                "logprobs": None,
                "finish_reason": a.finish_reason,
            }
            for i, a in enumerate(answers)
        ]
        kind = "chat.completion"
    else:
        choices = [
            {"index": i, "text": a.text, "logprobs": None, "finish_reason": a.finish_reason}
            for i, a in enumerate(answers)
        ]
        kind = "text_completion"
    return dumps(
        {
            "id": request_id,
            "object": kind,
            "created": created,
            "model": job.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": usage(job.prompt_tokens, completion_tokens),
        }
    )


def chunk(
    job: Job, request_id: str, created: int, index: int, piece: str | None, finish: str | None
) -> bytes:
    """One SSE event; ``piece`` None with no ``finish`` is the chat role chunk."""
    choice: dict[str, Any]
    if job.chat:
        delta: dict[str, Any] = (
            {"role": "assistant", "content": ""} if piece is None and finish is None else {}
        )
        if piece is not None:
            delta["content"] = piece
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": index, "text": piece or "", "logprobs": None, "finish_reason": finish}
    return _event(job, request_id, created, [choice], None)


def usage_chunk(job: Job, request_id: str, created: int, completion_tokens: int) -> bytes:
    return _event(job, request_id, created, [], usage(job.prompt_tokens, completion_tokens))


def _event(job: Job, request_id: str, created: int, choices: list[Any], use: dict[str, int] | None) -> bytes:
    event = {
        "id": request_id,
        "object": "chat.completion.chunk" if job.chat else "text_completion",
        "created": created,
        "model": job.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": use,
    }
    return b"data: " + dumps(event) + b"\n\n"


STREAM_DONE = b"data: [DONE]\n\n"


def models_body(model: str, adapters: list[str], max_model_len: int, created: int) -> bytes:
    def card(name: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "nimflow-fake",
            "root": parent or name,
            "parent": parent,
            "max_model_len": max_model_len,
            "permission": [],
        }

    return dumps({"object": "list", "data": [card(model, None), *(card(a, model) for a in adapters)]})


def embeddings_body(body: Any, default_model: str) -> bytes:
    """An embeddings answer: an 8-number vector per input, the same for the same text."""
    if not isinstance(body, dict) or "input" not in body:
        raise bad_request("'input' is required: a string or a list of strings.")
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    tokens = 0
    for index, text in enumerate(inputs):
        words = str(text).split()
        tokens += len(words)
        digest = hashlib.blake2b(str(text).encode(), digest_size=8).digest()
        vector = [round(b / 255 - 0.5, 4) for b in digest]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return dumps(
        {"object": "list", "data": data, "model": body.get("model") or default_model, "usage": usage}
    )
