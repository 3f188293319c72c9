"""The official openai client parses every kind of response the fake server sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import openai
import pydantic
import pytest

from nimflow.testing import FakeServer

TEXT = (
    "Extract the named entities from the text below.\n\n"
    "Tim Cook, the CEO of Apple Inc., met Sundar Pichai of Google in Paris on 12 March 2024 "
    "before visiting Stanford University in California. They discussed chips. Nothing was decided."
)
MODEL = "meta/llama3-8b-instruct"


class Entities(pydantic.BaseModel):
    persons: list[str]
    organizations: list[str]
    locations: list[str]
    dates: list[str]


def client(server: FakeServer, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=10)


def test_chat_completion(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        completion = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": TEXT}])
    assert completion.system_fingerprint == "nimflow-fake"
    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("Tim Cook, the CEO")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == len(TEXT.split())


def test_raw_response_carries_the_fake_header(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi."}]
        )
    assert raw.headers["x-nimflow-fake"] == "1"
    assert raw.parse().choices[0].message.content == "Hi."


def test_n_choices(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        completion = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi."}], n=3
        )
    assert [choice.index for choice in completion.choices] == [0, 1, 2]


def test_streaming_chat_with_usage(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        stream = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": TEXT}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
        chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Tim Cook, the CEO of"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_streaming_text_completion(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        chunks = list(c.completions.create(model=MODEL, prompt="One two. Three.", stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == "One two. Three."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_structured_output_parsed_into_pydantic(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        completion = c.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": TEXT}], response_format=Entities
        )
    parsed = completion.choices[0].message.parsed
    assert parsed == Entities(
        persons=["Tim Cook", "Sundar Pichai"],
        organizations=["Apple Inc.", "Google", "Stanford University"],
        locations=["Paris", "California"],
        dates=["12 March 2024"],
    )


def test_structured_output_cut_by_max_tokens(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c, pytest.raises(openai.LengthFinishReasonError):
        c.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": TEXT}], response_format=Entities, max_tokens=5
        )


def test_json_object_mode(fake_openai: FakeServer) -> None:
    with client(fake_openai) as c:
        completion = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": TEXT}], response_format={"type": "json_object"}
        )
    content = completion.choices[0].message.content
    assert content is not None
    assert json.loads(content)["summary"].startswith("Tim Cook")


def test_models_list(fake_openai_factory: Callable[..., FakeServer]) -> None:
    server = fake_openai_factory(adapters=["Samhita/OrpoLlama-3-8B-Instruct"])
    with client(server) as c:
        assert [m.id for m in c.models.list()] == [MODEL, "Samhita/OrpoLlama-3-8B-Instruct"]


def test_errors_map_to_openai_exceptions(fake_openai_factory: Callable[..., FakeServer]) -> None:
    server = fake_openai_factory(api_key="sk-key", max_model_len=20)
    with client(server, "sk-key") as c:
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="maximum context length is 20 tokens"):
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": TEXT}])
    with client(server, "sk-wrong") as c, pytest.raises(openai.AuthenticationError):
        c.models.list()


def test_async_client_concurrent_requests(fake_openai_factory: Callable[..., FakeServer]) -> None:
    server = fake_openai_factory(latency_ms=20)

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
            replies = await asyncio.gather(
                *(
                    c.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": f"Item {i}."}]
                    )
                    for i in range(20)
                )
            )
            parsed = await c.chat.completions.parse(
                model=MODEL, messages=[{"role": "user", "content": TEXT}], response_format=Entities
            )
            assert parsed.choices[0].message.parsed is not None
            stream = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "A b c."}], stream=True
            )
            streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
            assert streamed == "A b c."
        return [r.choices[0].message.content or "" for r in replies]

    assert asyncio.run(main()) == [f"Item {i}." for i in range(20)]
