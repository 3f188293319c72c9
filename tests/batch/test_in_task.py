"""`nimflow.batch.batch` inside an actor task: the Batch output shape, order, 4xx and per-line
errors, through the actor's routed client to the fake server."""

from __future__ import annotations

from typing import Any

from batch_support import chat_line

import nimflow as nf
from nimflow.batch import batch
from nimflow.testing import FakeServer


def test_batch_inside_an_actor_task(fake: FakeServer) -> None:
    fake.set_faults("seq:500,html")  # retried by the transport, then an error on its line
    env = nf.ActorEnvironment("batcher", nf.OpenAIEndpoint(base_url=fake.base_url), ttl_seconds=0)

    @env.task
    async def answer(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await batch(requests, concurrency=1)

    @nf.workflow
    def wf(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return answer(requests=requests)

    lines = [
        chat_line("a"),
        chat_line("b"),
        {"custom_id": "c", "url": "/v1/files", "body": {}},
        chat_line("d"),
    ]
    lines[3]["body"]["model"] = "unknown"
    out = nf.run(wf, requests=lines).outputs
    assert [o["custom_id"] for o in out] == ["a", "b", "c", "d"]
    # a: its 500 and then an HTML page (not an answer) are both retried by the transport.
    assert out[0]["response"]["status_code"] == 200 and out[0]["error"] is None
    assert out[1]["response"]["status_code"] == 200 and out[1]["error"] is None
    assert out[2]["error"]["code"] == "invalid_url"
    assert out[3]["response"]["status_code"] == 404
    assert [r.fault for r in fake.requests if r.method == "POST"] == ["500", "html", None, None, None]


def test_nf_llm_batch_stores_each_answer_and_a_later_call_sends_only_the_rest(fake: FakeServer) -> None:
    env = nf.ActorEnvironment("batcher", nf.OpenAIEndpoint(base_url=fake.base_url), ttl_seconds=0)

    @env.task(cache=False)
    async def answer(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await nf.llm.batch(requests)

    @nf.workflow
    def wf(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return answer(requests=requests)

    first = nf.run(wf, requests=[chat_line("a"), chat_line("b")]).outputs
    lines = [
        chat_line("a"),
        chat_line("b"),
        chat_line("c"),
        {"custom_id": "d", "url": "/v1/files", "body": {}},
    ]
    again = nf.run(wf, requests=lines).outputs
    assert [o["custom_id"] for o in again] == ["a", "b", "c", "d"]
    assert again[:2] == first  # the stored answers, not new ones
    assert again[2]["response"]["status_code"] == 200
    assert again[3]["response"] is None and again[3]["error"]["code"] == "invalid_url"
    prompts = [r.prompt for r in fake.requests if r.method == "POST"]
    assert len(prompts) == 3 and prompts[-1] == "Question c. Answer it briefly."
