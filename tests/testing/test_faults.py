"""Scripted faults: the spec grammar, each kind by sequence and by rate, and control over HTTP."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

import openai
import pydantic
import pytest
from raw_http import RawHTTP

from nimflow.testing import FakeServer, FaultKind, FaultPlan

MODEL = "meta/llama3-8b-instruct"


class Entities(pydantic.BaseModel):
    persons: list[str]
    organizations: list[str]


def test_spec_grammar() -> None:
    plan = FaultPlan.parse("seq:ok,429*2,drop; 500:0.05,503:10% ; retry_after=0.5;hang_seconds=3")
    assert plan.sequence == (FaultKind.OK, FaultKind.RATE_LIMIT, FaultKind.RATE_LIMIT, FaultKind.DROP)
    assert plan.rates == {FaultKind.SERVER_ERROR: 0.05, FaultKind.UNAVAILABLE: 0.1}
    assert (plan.retry_after, plan.hang_seconds) == (0.5, 3.0)
    assert FaultPlan.parse(plan.to_spec()) == plan
    assert FaultPlan.from_json(plan.to_json()) == plan
    assert FaultPlan.parse("") == FaultPlan.parse("none") == FaultPlan() == FaultPlan.coerce(None)
    assert FaultPlan().to_spec() == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("418:0.1", "unknown fault kind '418'"),
        ("429", "expected KIND:RATE"),
        ("429:2", "between 0 and 1"),
        ("429:0.6,500:0.6", "more than 1"),
        ("seq:429*0", "repeat count"),
        ("retry_after=soon", "must be a number"),
        ("colour=red", "unknown fault option"),
    ],
)
def test_spec_errors_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan.parse(spec)


def test_sequence_of_status_faults(fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP) -> None:
    server = fake_openai_factory(faults="seq:ok,429,500,503,malformed;retry_after=2")
    replies = [raw_http.chat(server.url) for _ in range(6)]
    assert [r.status for r in replies] == [200, 429, 500, 503, 200, 200]
    assert replies[1].headers["retry-after"] == "2"
    assert replies[1].headers["retry-after-ms"] == "2000"
    assert replies[1].json()["error"]["code"] == "rate_limit_exceeded"
    assert replies[2].json()["error"]["type"] == "server_error"
    with pytest.raises(ValueError):
        json.loads(replies[4].body)  # malformed: 200 with a body that is not JSON
    assert replies[5].json()["choices"]
    assert [r.fault for r in server.requests] == [None, "429", "500", "503", "malformed", None]
    assert [r.status for r in server.requests] == [200, 429, 500, 503, 200, 200]


def test_openai_client_sees_429_with_retry_after(fake_openai: FakeServer) -> None:
    fake_openai.set_faults("seq:429;retry_after=0.25")
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.response.headers["retry-after"] == "0.25"
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def test_drop_closes_without_a_response(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    fake_openai.set_faults("seq:drop,drop")
    with pytest.raises(http.client.RemoteDisconnected):
        raw_http.chat(fake_openai.url)
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        ).choices
    assert [(r.fault, r.status) for r in fake_openai.requests] == [
        ("drop", None),
        ("drop", None),
        (None, 200),
    ]


def test_hang_outlasts_the_client_timeout(fake_openai: FakeServer) -> None:
    fake_openai.set_faults("seq:hang")
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert time.monotonic() - started < 5
        assert client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        ).choices


def test_hang_ends_after_hang_seconds_by_dropping(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    fake_openai.set_faults("seq:hang;hang_seconds=0.2")
    started = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        raw_http.chat(fake_openai.url, timeout=10)
    assert 0.2 <= time.monotonic() - started < 5


def test_stop_ends_hangs_at_once(raw_http: RawHTTP) -> None:
    server = FakeServer(faults="seq:hang;hang_seconds=60").start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            raw_http.chat(server.url, timeout=30)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.app.metrics.faults and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    thread.join(10)
    assert time.monotonic() - started < 5
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)


def test_truncate_cuts_structured_output_mid_json(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    fake_openai.set_faults("seq:truncate,truncate")
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Entities", "schema": Entities.model_json_schema()},
    }
    text = "Find names.\n\nTim Cook met Sundar Pichai at Google."
    reply = raw_http.chat(fake_openai.url, text, response_format=response_format).json()
    content = reply["choices"][0]["message"]["content"]
    assert reply["choices"][0]["finish_reason"] == "length"
    assert content.startswith('{"persons": ["Tim')
    with pytest.raises(ValueError):
        json.loads(content)
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.LengthFinishReasonError):
            client.chat.completions.parse(
                model=MODEL, messages=[{"role": "user", "content": text}], response_format=Entities
            )
        parsed = client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": text}], response_format=Entities
        )
    assert parsed.choices[0].message.parsed == Entities(
        persons=["Tim Cook", "Sundar Pichai"], organizations=["Google"]
    )


def test_rates_are_drawn_from_a_seeded_rng(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    patterns = []
    for _ in range(2):
        server = fake_openai_factory(faults="429:0.3,503:0.2", seed=7)
        patterns.append([raw_http.chat(server.url).status for _ in range(60)])
    assert patterns[0] == patterns[1]  # same plan and seed: same requests fail
    counts = {status: patterns[0].count(status) for status in (200, 429, 503)}
    assert 8 <= counts[429] <= 30 and 4 <= counts[503] <= 22 and counts[200] >= 15
    always = fake_openai_factory(faults="500:1")
    assert {raw_http.chat(always.url).status for _ in range(5)} == {500}


def test_faults_only_hit_inference(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    fake_openai.set_faults("500:1")
    assert raw_http.request(fake_openai.url, path="/v1/models").status == 200
    assert raw_http.request(fake_openai.url, path="/health").status == 200
    body = {"model": MODEL, "prompt": "x"}
    assert raw_http.request(fake_openai.url, "POST", "/v1/completions", body).status == 500


def test_faults_over_http(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    reply = raw_http.request(fake_openai.url, "POST", "/_fake/faults", {"spec": "seq:503,ok"})
    assert reply.status == 200
    assert reply.json()["sequence"] == ["503", "ok"]
    assert fake_openai.faults.sequence == (FaultKind.UNAVAILABLE, FaultKind.OK)
    assert raw_http.request(fake_openai.url, path="/_fake/faults").json()["spec"] == "seq:503,ok"
    assert [raw_http.chat(fake_openai.url).status for _ in range(3)] == [503, 200, 200]
    structured = {"rates": {"429": 1.0}, "retry_after": 3}
    assert raw_http.request(fake_openai.url, "POST", "/_fake/faults", structured).status == 200
    limited = raw_http.chat(fake_openai.url)
    assert (limited.status, limited.headers["retry-after"]) == (429, "3")
    bad = raw_http.request(fake_openai.url, "POST", "/_fake/faults", {"spec": "teapot:1"})
    assert bad.status == 400
    assert "unknown fault kind" in bad.json()["error"]["message"]
    assert raw_http.request(fake_openai.url, "POST", "/_fake/faults", {"spec": "none"}).status == 200
    assert raw_http.chat(fake_openai.url).status == 200
