"""The one redaction function: sentinels never survive it; ordinary text passes unchanged."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from nimflow._exceptions import AuthenticationError, EndpointUnreachableError
from nimflow._redact import redact, remember_secret
from nimflow.llm import chat
from nimflow.llm.client import build_actor_context, close_actor_context
from nimflow.llm.retry import RetryPolicy
from nimflow.testing import FakeServer, Reply

SENTINEL = "Zq7-sentinel-value-9xK"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("endpoint:http://user:KEY123@127.0.0.1:8000/v1", "endpoint:http://***@127.0.0.1:8000/v1"),
        ("postgresql+psycopg://me:pw@db/nf", "postgresql+psycopg://***@db/nf"),
        (
            "cannot reach https://token@host.example/v1 (refused)",
            "cannot reach https://***@host.example/v1 (refused)",
        ),
        ("Authorization: Bearer abc.DEF-123_xyz", "Authorization: Bearer ***"),
        (
            "Incorrect API key provided: ep-...4242. You can find your API key at https://x.example/keys.",
            "Incorrect API key provided: ***. You can find your API key at https://x.example/keys.",
        ),
        ("Incorrect API key provided: sk-proj-****abcd", "Incorrect API key provided: ***"),
        ("GET /v1?api_key=QWERTY123&x=1", "GET /v1?api_key=***&x=1"),
        ('{"password": "hunter22"}', '{"password": "***"}'),
        ("key nvapi-AbCdEfGhIjKlMnOp in the log", "key *** in the log"),
        ("hf_AbCdEfGhIjKlMnOpQr and sk-abcdefghijklmnop", "*** and ***"),
    ],
)
def test_masks_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://127.0.0.1:8000/v1/chat/completions",
        "item 'doc-1': max_tokens=512, prompt_tokens: 12, the token budget was 8",
        "set the secret NGC_API_KEY (`nimflow secret create NGC_API_KEY`) and run again",
        "user@example.com wrote a task-list-for-the-week",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_remembered_secrets_are_masked_anywhere() -> None:
    assert SENTINEL in redact(f"x {SENTINEL} y")
    remember_secret(SENTINEL)
    remember_secret(SENTINEL + "-longer")
    assert redact(f"x {SENTINEL} y {SENTINEL}-longer,{SENTINEL}") == "x *** y ***,***"
    remember_secret("short")  # too short to be a key: masking it would mask ordinary words
    assert redact("a short text") == "a short text"


@pytest.mark.anyio
async def test_llm_errors_and_logs_carry_no_key(
    mini: FakeServer, closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = "ep-" + "k" * 20 + "4242"
    mini.script = lambda body: Reply(
        401, {"error": {"message": f"Incorrect API key provided: ep-...4242 ({key})."}}
    )
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.01)
    ctx = build_actor_context("a", "m", [mini.base_url], api_key=key, retry_policy=policy)
    with pytest.raises(AuthenticationError) as denied:
        await chat("hi", item_id="d1", ctx=ctx)
    await close_actor_context(ctx)

    with_userinfo = closed_url.replace("http://", f"http://user:{SENTINEL}@")
    down: Any = build_actor_context("b", "m", [with_userinfo], retry_policy=policy)
    with caplog.at_level(logging.DEBUG), pytest.raises(EndpointUnreachableError) as unreachable:
        await chat("hi", item_id="d2", ctx=down)
    await close_actor_context(down)
    for text in (str(denied.value), str(unreachable.value), caplog.text):
        assert key not in text and "4242" not in text and SENTINEL not in text
    assert closed_url in str(unreachable.value)  # the URL without its userinfo
