"""The fake server's options: one definition (FakeOptions) turned into argv, the HTTP control
and both command lines; the queue gauges an autoscaler reads; the html fault; scripted replies."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

import openai
import typer
from raw_http import RawHTTP
from typer.testing import CliRunner

from nimflow.actors.launchers.process import fake_server_argv
from nimflow.actors.servers import FakeOpenAI
from nimflow.testing import FakeOptions, FakeServer, FaultKind, Reply, command, spawn
from nimflow.testing._options import build_parser, fields, flag_of, from_strings
from nimflow.testing.cli import fake_server


def test_argv_round_trips_through_the_parser() -> None:
    options = FakeOptions(
        port=0,
        model="m/x",
        adapters=("a1", "a2"),
        latency_ms=12.5,
        max_concurrency=3,
        api_key="sk-hidden",
        faults="seq:429*2,html;500:0.1;retry_after=0.5",
        seed=7,
        log_limit=0,
    )
    argv = options.argv()
    assert "sk-hidden" not in " ".join(argv)  # the key travels in the environment
    assert options.env() == {"NIMFLOW_FAKE_API_KEY": "sk-hidden"}
    parsed = from_strings(vars(build_parser().parse_args(argv)))
    assert parsed == FakeOptions(**{**vars(options), "api_key": None})
    assert command(options)[:3] == [sys.executable, "-m", "nimflow.testing"]


def test_every_field_is_an_option_of_both_command_lines() -> None:
    flags = {flag_of(f) for f in fields()}
    assert len(flags) == len(fields()) == 13
    argparse_flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert argparse_flags - {"-h", "--help"} == flags
    app = typer.Typer()
    app.command("fake-server")(fake_server)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["fake-server", "--help"], env={"COLUMNS": "200"})
    assert set(re.findall(r"--[a-z][a-z-]+", result.output)) - {"--help"} == flags


def test_the_actor_launcher_derives_its_argv_from_the_options() -> None:
    argv = fake_server_argv(FakeOpenAI(model="m/y", adapter_names=("l1",), latency_ms=5), port=4321)
    options = from_strings(vars(build_parser().parse_args(argv[3:])))
    assert (options.port, options.model, options.adapters, options.latency_ms) == (4321, "m/y", ("l1",), 5.0)


def test_http_control_reads_and_changes_live_options(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(api_key="sk-secret", latency_ms=1)
    config = raw_http.request(server.url, path="/_fake/config").json()
    assert config["api_key"] == "***" and config["latency_ms"] == 1
    assert set(config) == {f.name for f in fields()}
    changed = raw_http.request(server.url, "POST", "/_fake/config", {"latency_ms": 7, "faults": "seq:500"})
    assert changed.status == 200 and changed.json()["latency_ms"] == 7
    assert server.config.latency_ms == 7 and server.faults.sequence == (FaultKind.SERVER_ERROR,)
    refused = raw_http.request(server.url, "POST", "/_fake/config", {"model": "other"})
    assert refused.status == 400 and "cannot change at runtime" in refused.json()["error"]["message"]
    assert server.config.model == "meta/llama3-8b-instruct"


def test_process_is_configured_over_http() -> None:
    with spawn(latency_ms=0) as server:
        server.configure(faults="seq:html", latency_ms=3)
        assert server.faults.sequence == (FaultKind.HTML,)
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="meta/llama3-8b-instruct", messages=[{"role": "user", "content": "Hi."}]
            )
            assert raw.headers["content-type"] == "text/html"
        assert [(r.fault, r.status) for r in server.requests] == [("html", 200)]


def test_html_fault_answers_200_with_a_page(fake_openai: FakeServer, raw_http: RawHTTP) -> None:
    fake_openai.set_faults("seq:html")
    reply = raw_http.chat(fake_openai.url)
    assert reply.status == 200 and reply.headers["content-type"] == "text/html"
    assert reply.body.startswith(b"<html>")
    assert [r.fault for r in fake_openai.requests] == ["html"]


def _gauge(text: str, name: str) -> int:
    match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\d+)$", text, re.M)
    assert match, text
    return int(match.group(1))


def test_metrics_report_the_queue_behind_the_cap(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(max_concurrency=2, latency_ms=400)
    threads = [threading.Thread(target=raw_http.chat, args=(server.url, f"q{i}")) for i in range(5)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(200):  # bounded: until all five have arrived
            text = raw_http.request(server.url, path="/v1/metrics").body.decode()
            if _gauge(text, "vllm:num_requests_waiting") + _gauge(text, "vllm:num_requests_running") == 5:
                break
            threading.Event().wait(0.01)
        assert _gauge(text, "vllm:num_requests_running") == 2
        assert _gauge(text, "vllm:num_requests_waiting") == 3
    finally:
        for thread in threads:
            thread.join(10)
    text = raw_http.request(server.url, path="/v1/metrics").body.decode()
    assert _gauge(text, "vllm:num_requests_waiting") == _gauge(text, "vllm:num_requests_running") == 0
    assert server.peak_in_flight == 2


def test_scripted_replies(fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP) -> None:
    def script(body: Any) -> Reply | None:
        text = body["messages"][-1]["content"]
        if text == "teapot":
            return Reply(status=418, body={"error": {"message": "short and stout"}}, headers={"x-a": "b"})
        if text == "events":
            return Reply(events=[{"n": 1}, {"n": 2}])
        return None  # the fake's own answer

    server = fake_openai_factory(script=script)
    teapot = raw_http.chat(server.url, "teapot")
    assert teapot.status == 418 and teapot.headers["x-a"] == "b"
    assert teapot.json()["error"]["message"] == "short and stout"
    events = raw_http.chat(server.url, "events")
    assert events.body.decode().split("\n\n")[:3] == ['data: {"n":1}', 'data: {"n":2}', "data: [DONE]"]
    own = raw_http.chat(server.url, "Plain answer.")
    assert json.loads(own.body)["choices"][0]["message"]["content"] == "Plain answer."
