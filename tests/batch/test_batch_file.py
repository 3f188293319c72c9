"""`nimflow batch` and run_batch against the fake server over real HTTP: output shape and order,
per-line errors, 4xx recorded, resume from the cache, the recorded run, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_support import chat_line, read_output, write_lines
from typer.testing import CliRunner

from nimflow._exceptions import UserInputError
from nimflow.batch import run_batch, run_batch_file
from nimflow.cli import app
from nimflow.testing import FakeServer


def _endpoint(server: FakeServer) -> str:
    return f"endpoint:{server.base_url}"


def test_output_lines_in_order_with_per_line_errors_and_4xx(tmp_path: Path, fake: FakeServer) -> None:
    lines = [chat_line(f"r{i}") for i in range(30)]
    lines[3] = {"custom_id": "emb", "url": "/v1/embeddings", "body": {"input": ["a b", "c"]}}
    lines[4] = {"custom_id": "cmp", "url": "/v1/completions", "body": {"prompt": "Say this. Then that."}}
    lines[5] = {"custom_id": "nope", "url": "/v1/images/generations", "body": {"prompt": "x"}}
    lines[6] = chat_line("missing-model")
    lines[6]["body"]["model"] = "no-such-model"  # the server answers 404: recorded, not retried
    source = write_lines(tmp_path / "in.jsonl", lines)
    summary = run_batch_file(
        source, tmp_path / "out.jsonl", server=_endpoint(fake), ttl=0, errors_path=tmp_path / "err.jsonl"
    )
    out = read_output(tmp_path / "out.jsonl")
    assert [o["custom_id"] for o in out] == [line["custom_id"] for line in lines]
    assert all(o["id"].startswith("batch_req_") for o in out)
    first = out[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "Question r0. Answer it briefly."
    assert first["response"]["request_id"] == first["response"]["body"]["id"]
    assert len(out[3]["response"]["body"]["data"]) == 2
    assert out[4]["response"]["body"]["choices"][0]["text"]
    assert out[5]["response"] is None and out[5]["error"]["code"] == "invalid_url"
    assert out[6]["response"]["status_code"] == 404 and out[6]["error"] is None
    assert sum(1 for r in fake.requests if r.model == "no-such-model") == 1
    assert [o["custom_id"] for o in read_output(tmp_path / "err.jsonl")] == ["nope", "missing-model"]
    assert (summary.requests, summary.failed, summary.cached) == (30, 1, 0)
    assert summary.tokens > 0 and len(summary.runs) == 1
    # A rerun sends no request: every answer (the 404 too) is stored. (It asks /v1/models what
    # answers, which names the cache entries.)
    fake.clear_log()
    again = run_batch_file(source, tmp_path / "out2.jsonl", server=_endpoint(fake), ttl=0)
    assert [r.path for r in fake.requests if r.method == "POST"] == [] and again.cached == 29
    assert (tmp_path / "out2.jsonl").read_text() == (tmp_path / "out.jsonl").read_text()
    # --no-cache sends every request again.
    run_batch_file(source, tmp_path / "out3.jsonl", server=_endpoint(fake), ttl=0, use_cache=False)
    assert len([r for r in fake.requests if r.path.startswith("/v1/") and r.method == "POST"]) == 29


def test_model_filled_from_option_or_from_the_server(tmp_path: Path) -> None:
    fake = FakeServer(adapters=["lora-x"]).start()
    line = chat_line("a")
    del line["body"]["model"]
    source = write_lines(tmp_path / "in.jsonl", [line])
    run_batch_file(source, tmp_path / "out.jsonl", server=_endpoint(fake), ttl=0)
    assert [r.model for r in fake.requests if r.method == "POST"] == ["meta/llama3-8b-instruct"]
    assert read_output(tmp_path / "out.jsonl")[0]["response"]["status_code"] == 200
    fake.clear_log()
    run_batch_file(source, tmp_path / "out.jsonl", server=_endpoint(fake), model="lora-x", ttl=0)
    assert [r.model for r in fake.requests if r.method == "POST"] == ["lora-x"]
    assert read_output(tmp_path / "out.jsonl")[0]["response"]["body"]["model"] == "lora-x"
    fake.stop()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ['{"custom_id": "a", "body": {}, "url": "/v1/completions"}', "{not json"],
            r"line 2: not valid JSON",
        ),
        ([{"url": "/v1/completions", "body": {}}], r"line 1: missing custom_id"),
        ([{"custom_id": "x", "url": "/v1/completions"}], r"line 1 \(x\): missing body"),
        (
            [chat_line("a"), chat_line("b"), chat_line("a"), chat_line("a")],
            r"custom_id 'a' appears on lines 1, 3, 4",
        ),
        (["[1, 2]"], r"line 1: expected a JSON object"),
    ],
)
def test_invalid_input_is_refused_with_line_numbers_and_nothing_sent(
    tmp_path: Path, fake: FakeServer, lines: list[object], message: str
) -> None:
    source = write_lines(tmp_path / "in.jsonl", lines)
    (tmp_path / "out.jsonl").write_text("previous output\n")
    with pytest.raises(UserInputError, match=message):
        run_batch_file(source, tmp_path / "out.jsonl", server=_endpoint(fake), ttl=0)
    assert fake.requests == []
    assert (tmp_path / "out.jsonl").read_text() == "previous output\n"  # left as it was


def test_every_problem_is_listed_at_once(tmp_path: Path, fake: FakeServer) -> None:
    source = write_lines(
        tmp_path / "in.jsonl", ["{", chat_line("a"), {"url": "/v1/x", "body": {}}, chat_line("a")]
    )
    with pytest.raises(UserInputError) as info:
        run_batch_file(source, tmp_path / "out.jsonl", server=_endpoint(fake), ttl=0)
    text = str(info.value)
    assert "3 problem(s)" in text and "line 1:" in text and "line 3: missing custom_id" in text
    assert "lines 2, 4" in text


def test_missing_file_and_bad_server_spec(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        run_batch_file(tmp_path / "none.jsonl", tmp_path / "out.jsonl", server="fake")
    source = write_lines(tmp_path / "in.jsonl", [chat_line("a")])
    with pytest.raises(UserInputError, match="not understood: use fake, endpoint:URL"):
        run_batch_file(source, tmp_path / "out.jsonl", server="gpu:please")


def test_run_batch_from_python_on_the_fake_process_server() -> None:
    requests = [chat_line(f"p{i}") for i in range(12)]
    out = run_batch(requests, server="fake", ttl=0, chunk_size=5)
    assert [o["custom_id"] for o in out] == [f"p{i}" for i in range(12)]
    assert all(o["response"]["status_code"] == 200 for o in out)
    with pytest.raises(UserInputError, match="custom_id 'p1' appears in requests 2, 3"):
        run_batch([requests[0], requests[1], requests[1]], server="fake", ttl=0)


def test_cli_records_a_run_and_prints_a_summary(tmp_path: Path, fake: FakeServer) -> None:
    source = write_lines(tmp_path / "in.jsonl", [chat_line(f"c{i}") for i in range(8)])
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--server", _endpoint(fake), "--ttl", "0"],
    )
    assert result.exit_code == 0, result.output
    assert "batch done" in result.output and "8 requests, 0 cached, 0 failed" in result.output
    runs = runner.invoke(app, ["runs"])
    assert runs.exit_code == 0 and "batch.file" in runs.output and "succeeded" in runs.output
    bad = write_lines(tmp_path / "bad.jsonl", ["nope"])
    failed = runner.invoke(app, ["batch", str(bad), "-o", str(tmp_path / "o.jsonl"), "--server", "fake"])
    assert failed.exit_code == 1 and "line 1: not valid JSON" in failed.output
