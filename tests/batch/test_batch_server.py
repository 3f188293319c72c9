"""`nimflow batch-server` driven by the official openai client end to end (upload, create,
poll, download, list, cancel), its bearer token, and a batch surviving a server killed mid-way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
from batch_support import answered, chat_line, cli_env, nimflow_argv, write_lines
from openai.types import Batch

from nimflow.testing import FakeServer

TOKEN = "batch-token-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def batch_server(home: Path, fake: FakeServer, port: int) -> Iterator[subprocess.Popen[bytes]]:
    argv = nimflow_argv(
        "batch-server", "--port", str(port), "--server", f"endpoint:{fake.base_url}", "--ttl", "0"
    )
    env = {**cli_env(), "NIMFLOW_HOME": str(home), "NIMFLOW_BATCH_TOKEN": TOKEN}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the batch server did not start"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def _poll(
    client: openai.OpenAI, batch_id: str, until: set[str], limit: float = 120
) -> tuple[Batch, list[Batch]]:
    seen: list[Batch] = []
    deadline = time.monotonic() + limit
    while True:
        batch = client.batches.retrieve(batch_id)
        seen.append(batch)
        if batch.status in until:
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.05)


def _upload(client: openai.OpenAI, path: Path) -> str:
    with path.open("rb") as f:
        return client.files.create(file=f, purpose="batch").id


def test_official_client_uploads_creates_polls_downloads_lists_and_cancels(
    tmp_path: Path, nimflow_home: Path
) -> None:
    port = _free_port()
    lines = [chat_line(f"req-{i}", f"Batch line {i}. Short.") for i in range(250)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    with FakeServer(latency_ms=5) as fake, batch_server(nimflow_home, fake, port):
        url = f"http://127.0.0.1:{port}/v1"
        with (
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.batches.list()
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
        file_id = _upload(client, source)
        uploaded = client.files.retrieve(file_id)
        assert (uploaded.purpose, uploaded.bytes, uploaded.filename) == (
            "batch",
            source.stat().st_size,
            "in.jsonl",
        )
        assert client.files.content(file_id).content == source.read_bytes()

        created = client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"job": "t1"},
        )
        assert created.status == "validating" and created.metadata == {"job": "t1"}
        done, seen = _poll(client, created.id, {"completed", "failed"})
        assert done.status == "completed", done.errors
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
            250,
            250,
            0,
        )
        assert done.in_progress_at and done.finalizing_at and done.completed_at
        statuses = [b.status for b in seen]
        assert statuses == sorted(
            statuses, key=["validating", "in_progress", "finalizing", "completed"].index
        )
        counts = [b.request_counts.completed for b in seen if b.request_counts]
        assert counts == sorted(counts)  # only ever moves up
        assert done.output_file_id is not None and done.error_file_id is None
        output = client.files.content(done.output_file_id).text.splitlines()
        import json

        rows = [json.loads(line) for line in output]
        assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(250)]
        assert rows[7]["response"]["body"]["choices"][0]["message"]["content"] == "Batch line 7. Short."

        # Cancel a slow batch while it runs: it ends cancelled, with the lines done so far.
        fake.configure(latency_ms=150)
        other = write_lines(tmp_path / "other.jsonl", [chat_line(f"o{i}", f"Other {i}.") for i in range(250)])
        slow = client.batches.create(
            input_file_id=_upload(client, other), endpoint="/v1/chat/completions", completion_window="24h"
        )
        fake.clear_log()
        _poll(client, slow.id, {"in_progress"})
        time.sleep(0.3)
        cancelling = client.batches.cancel(slow.id)
        assert cancelling.status in ("cancelling", "cancelled")
        cancelled, _ = _poll(client, slow.id, {"cancelled"})
        assert cancelled.cancelling_at and cancelled.cancelled_at
        assert cancelled.request_counts is not None and cancelled.request_counts.completed < 250
        fake.configure(latency_ms=0)

        listed = client.batches.list(limit=1)
        assert [b.id for b in listed.data] == [slow.id] and listed.has_more
        assert [b.id for b in client.batches.list().data] == [slow.id, created.id]
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_missing")
        with pytest.raises(openai.BadRequestError):
            client.batches.create(
                input_file_id=file_id, endpoint="/v1/images/generations", completion_window="24h"
            )  # type: ignore[arg-type]


def test_a_batch_survives_a_killed_server_and_resumes(tmp_path: Path, nimflow_home: Path) -> None:
    port = _free_port()
    total = 600
    source = write_lines(
        tmp_path / "in.jsonl", [chat_line(f"k{i}", f"Kill line {i}. Short.") for i in range(total)]
    )
    with FakeServer(latency_ms=10, log_limit=100_000) as fake:
        url = f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
        with batch_server(nimflow_home, fake, port) as process:
            batch = client.batches.create(
                input_file_id=_upload(client, source),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            deadline = time.monotonic() + 60
            while len(answered(fake)) < total // 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        before = Counter(answered(fake))
        assert len(before) < total
        with batch_server(nimflow_home, fake, port):
            done, _ = _poll(client, batch.id, {"completed", "failed"})
            assert done.status == "completed" and done.request_counts is not None
            assert done.request_counts.completed == total
            assert done.output_file_id is not None
            text = client.files.content(done.output_file_id).text
        counts = Counter(answered(fake))
    assert len(counts) == total
    twice = [p for p, n in counts.items() if n > 1]
    assert all(p in before for p in twice) and len(twice) <= 300  # at most the chunk in flight
    assert [line.split('"custom_id":"')[1].split('"')[0] for line in text.splitlines()] == [
        f"k{i}" for i in range(total)
    ]
