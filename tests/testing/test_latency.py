"""Latency never blocks other requests; the concurrency cap queues the rest."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from raw_http import RawHTTP

from nimflow.testing import FakeServer


def _gauge(text: str, name: str) -> int:
    match = re.search(rf"^{name}{{[^}}]*}} (\d+)$", text, re.MULTILINE)
    assert match is not None, name
    return int(match.group(1))


def test_latency_does_not_block_other_requests(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(latency_ms=200)
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda i: raw_http.chat(server.url, f"Item {i}.").status, range(20)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 20
    assert 0.2 <= elapsed < 2.0  # 20 x 200 ms in series would take 4 s
    assert all(r.duration >= 0.19 for r in server.requests)


def test_latency_per_token(fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP) -> None:
    server = fake_openai_factory(latency_per_token_ms=20)
    started = time.monotonic()
    reply = raw_http.chat(server.url, "one two three four five six seven eight nine ten")
    assert reply.json()["usage"]["completion_tokens"] == 10
    assert time.monotonic() - started >= 0.2


def test_concurrency_cap_queues_the_rest(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(latency_ms=150, max_concurrency=2)
    seen: list[tuple[int, int]] = []
    with ThreadPoolExecutor(6) as pool:
        started = time.monotonic()
        futures = [pool.submit(raw_http.chat, server.url, f"Item {i}.") for i in range(6)]
        deadline = time.monotonic() + 5
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            text = raw_http.request(server.url, path="/v1/metrics").body.decode()
            seen.append(
                (
                    _gauge(text, "nimflow_fake_requests_in_flight"),
                    _gauge(text, "nimflow_fake_requests_waiting"),
                )
            )
            time.sleep(0.02)
        statuses = [f.result().status for f in futures]
    elapsed = time.monotonic() - started
    assert statuses == [200] * 6
    assert max(in_flight for in_flight, _ in seen) == 2
    assert max(waiting for _, waiting in seen) >= 1
    assert elapsed >= 3 * 0.15 - 0.02  # three waves of two


def test_streaming_keeps_its_slot_and_paces_tokens(
    fake_openai_factory: Callable[..., FakeServer], raw_http: RawHTTP
) -> None:
    server = fake_openai_factory(latency_per_token_ms=30, max_concurrency=1)
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        replies = list(pool.map(lambda _: raw_http.chat(server.url, "a b c d e", stream=True), range(2)))
    assert time.monotonic() - started >= 2 * 5 * 0.03
    for reply in replies:
        events = [line for line in reply.body.decode().split("\n\n") if line]
        assert events[-1] == "data: [DONE]"
        assert reply.headers["content-type"] == "text/event-stream"


def test_stop_does_not_wait_for_latency(raw_http: RawHTTP) -> None:
    server = FakeServer(latency_ms=30_000).start()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(raw_http.chat, server.url, "slow", timeout=30)
        deadline = time.monotonic() + 5
        while server.app.metrics.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        assert isinstance(future.exception(10), ConnectionError)
