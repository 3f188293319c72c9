"""Each endpoint over real HTTP, checked byte-level with a plain HTTP client."""

from __future__ import annotations

from collections.abc import Callable

from raw_http import RawHTTP

from nimflow.testing import FakeServer

DOC = (
    "Summarize the following paper:\n\n"
    "Warm servers cut cold starts. They stay up between runs. Batches reuse them. The end is near."
)


def test_health_endpoints_answer_200(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    for path in ("/v1/health/ready", "/health"):
        reply = raw_http.request(fake_openai.url, path=path)
        assert reply.status == 200
        assert reply.headers["x-nimflow-fake"] == "1"


def test_models_lists_base_and_adapters(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(model="meta/llama3-8b-instruct", adapters=["lora/a", "lora/b"])
    reply = raw_http.request(server.url, path="/v1/models")
    body = reply.json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert list(cards) == ["meta/llama3-8b-instruct", "lora/a", "lora/b"]
    assert cards["meta/llama3-8b-instruct"]["parent"] is None
    assert cards["lora/a"]["parent"] == cards["lora/a"]["root"] == "meta/llama3-8b-instruct"


def test_chat_completion_body(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    reply = raw_http.chat(fake_openai.url, DOC)
    assert reply.status == 200
    assert reply.headers["x-nimflow-fake"] == "1"
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["system_fingerprint"] == "nimflow-fake"
    assert body["model"] == "meta/llama3-8b-instruct"
    choice = body["choices"][0]
    # The instruction paragraph is left out; the first three sentences are the summary.
    assert choice["message"] == {
        "role": "assistant",
        "content": "Warm servers cut cold starts. They stay up between runs. Batches reuse them.",
        "refusal": None,
        "tool_calls": [],
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(DOC.split())
    assert usage["completion_tokens"] == 13
    assert usage["total_tokens"] == usage["prompt_tokens"] + 13


def test_answers_are_deterministic(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    first = raw_http.chat(fake_openai.url, DOC).json()
    second = raw_http.chat(fake_openai.url, DOC).json()
    assert first["choices"] == second["choices"]
    assert first["id"] != second["id"]


def test_max_tokens_cuts_with_finish_reason_length(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    body = raw_http.chat(fake_openai.url, DOC, max_tokens=4).json()
    assert body["choices"][0]["message"]["content"] == "Warm servers cut cold"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4


def test_completions_one_choice_per_prompt(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    body = {
        "model": "meta/llama3-8b-instruct",
        "prompt": ["One two.", "Four five six."],
        "max_tokens": 2,
    }
    reply = raw_http.request(fake_openai.url, "POST", "/v1/completions", body).json()
    assert reply["object"] == "text_completion"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in reply["choices"]] == [
        (0, "One two.", "stop"),
        (1, "Four five", "length"),
    ]
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    single = raw_http.request(fake_openai.url, "POST", "/v1/completions", {**body, "prompt": "Hi."}).json()
    assert [c["text"] for c in single["choices"]] == ["Hi."]


def test_unknown_model_gets_the_real_404_body(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    reply = raw_http.chat(fake_openai.url, model="nobody/none")
    assert reply.status == 404
    body = reply.json()
    assert body["object"] == "error"
    assert body["error"] == {
        "message": "The model `nobody/none` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


def test_prompt_over_context_length_gets_vllm_400(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(max_model_len=10)
    reply = raw_http.chat(server.url, "one two three four five six seven eight", max_tokens=5)
    assert reply.status == 400
    message = reply.json()["error"]["message"]
    assert message.startswith(
        "This model's maximum context length is 10 tokens. However, you requested 13 tokens"
    )
    assert reply.json()["error"]["code"] == 400
    assert raw_http.chat(server.url, "one two three", max_tokens=5).status == 200
    too_long = raw_http.chat(server.url, " ".join(["word"] * 11))
    assert too_long.status == 400
    assert "you requested 11 tokens in the messages" in too_long.json()["error"]["message"]


def test_api_key_checked(fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP) -> None:
    server = fake_openai_factory(api_key="sk-right-key")
    missing = raw_http.chat(server.url)
    assert missing.status == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "didn't provide an API key" in missing.json()["error"]["message"]
    wrong = raw_http.request(server.url, path="/v1/models", headers={"authorization": "Bearer sk-wrong-key"})
    assert wrong.status == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key" not in wrong.json()["error"]["message"]  # masked, as OpenAI does
    right = {"authorization": "Bearer sk-right-key"}
    assert raw_http.request(server.url, path="/v1/models", headers=right).status == 200
    assert raw_http.request(server.url, path="/health").status == 200  # health needs no key


def test_bad_requests(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    assert raw_http.request(fake_openai.url, "POST", "/v1/chat/completions", b"{not json").status == 400
    no_messages = raw_http.request(fake_openai.url, "POST", "/v1/chat/completions", {"model": "x"})
    assert no_messages.status == 404  # the model is checked first, as vLLM does
    empty = {"model": "meta/llama3-8b-instruct", "messages": []}
    assert raw_http.request(fake_openai.url, "POST", "/v1/chat/completions", empty).status == 400
    assert raw_http.request(fake_openai.url, path="/v2/nothing").status == 404
    assert raw_http.request(fake_openai.url, "GET", "/v1/chat/completions").status == 405


def test_metrics_in_prometheus_text(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(faults="seq:500")
    raw_http.chat(server.url, "a b c")
    raw_http.chat(server.url, "a b c")
    reply = raw_http.request(server.url, path="/v1/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    assert 'nimflow_fake_requests_total{path="/v1/chat/completions",status="200"} 1' in text
    assert 'nimflow_fake_requests_total{path="/v1/chat/completions",status="500"} 1' in text
    assert 'nimflow_fake_faults_total{kind="500"} 1' in text
    assert 'nimflow_fake_prompt_tokens_total{model_name="meta/llama3-8b-instruct"} 3' in text
    assert 'nimflow_fake_completion_tokens_total{model_name="meta/llama3-8b-instruct"} 3' in text
    assert 'nimflow_fake_requests_in_flight{model_name="meta/llama3-8b-instruct"} 0' in text
    assert "nimflow_fake_requests_waiting" in text
    assert "vllm:num_requests_waiting" in text


def test_request_log(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    raw_http.chat(fake_openai.url, "Log me. Please.", max_tokens=3)
    raw_http.request(fake_openai.url, path="/_fake/log")  # control endpoints are not logged
    [record] = fake_openai.requests
    assert (record.method, record.path, record.model, record.status) == (
        "POST",
        "/v1/chat/completions",
        "meta/llama3-8b-instruct",
        200,
    )
    assert record.body["max_tokens"] == 3
    assert record.prompt == "Log me. Please."
    assert record.fault is None
    assert 0 <= record.duration < 5
    over_http = raw_http.request(fake_openai.url, path="/_fake/log").json()["requests"]
    assert over_http == [record.to_json()]
    assert raw_http.request(fake_openai.url, "DELETE", "/_fake/log").status == 200
    assert fake_openai.requests == []
    fake_openai.clear_log()
