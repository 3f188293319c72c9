"""The request log that tests assert on, and the counters behind /v1/metrics."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the fake server saw it.

    ``status`` is None when no response was sent (a ``drop`` or ``hang`` fault, or the server
    stopped mid-request). ``body`` is the parsed JSON body (None for GET or a non-JSON body);
    ``prompt`` is the text the answer was made from (chat: the last user message; completions:
    the prompts joined by blank lines). ``headers`` are the request's, names in lower case; ``query`` its URL's query string. Times are ``time.time()`` seconds.
    """

    method: str
    path: str
    model: str | None
    body: Any
    prompt: str
    status: int | None
    fault: str | None
    stream: bool
    started: float
    ended: float
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""  # the URL's query string, without the "?"

    @property
    def duration(self) -> float:
        return self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """A bounded, thread-safe log: the newest ``limit`` records are kept (0 keeps none)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=max(limit, 0))
        self.enabled = limit > 0

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class Metrics:
    """Counters and gauges, only touched from the server's event loop."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.faults: dict[str, int] = {}
        self.in_flight = 0
        self.peak_in_flight = 0  # the most requests answered at once since start
        self.waiting = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def running(self, delta: int) -> None:
        self.in_flight += delta
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def count(self, path: str, status: int | None) -> None:
        key = (path, status or 0)
        self.requests[key] = self.requests.get(key, 0) + 1

    def render(self, model: str) -> str:
        """Prometheus text format; vLLM's names are mirrored so vLLM dashboards read it too."""
        lines = [
            "# HELP nimflow_fake_requests_total Requests answered, by path and status (0: no response).",
            "# TYPE nimflow_fake_requests_total counter",
        ]
        lines += [
            f'nimflow_fake_requests_total{{path="{path}",status="{status}"}} {n}'
            for (path, status), n in sorted(dict(self.requests).items())  # copy: read from other threads
        ]
        lines += [
            "# HELP nimflow_fake_faults_total Faults injected, by kind.",
            "# TYPE nimflow_fake_faults_total counter",
            *(f'nimflow_fake_faults_total{{kind="{k}"}} {n}' for k, n in sorted(dict(self.faults).items())),
        ]
        label = f'{{model_name="{model}"}}'
        for name, kind, text, value in (
            ("nimflow_fake_requests_in_flight", "gauge", "Requests being answered.", self.in_flight),
            ("nimflow_fake_requests_waiting", "gauge", "Requests queued for a slot.", self.waiting),
            ("nimflow_fake_prompt_tokens_total", "counter", "Prompt tokens (words).", self.prompt_tokens),
            ("nimflow_fake_completion_tokens_total", "counter", "Completion tokens.", self.completion_tokens),
            (
                "vllm:num_requests_running",
                "gauge",
                "Requests being answered (holding a slot).",
                self.in_flight,
            ),
            ("vllm:num_requests_waiting", "gauge", "Requests queued behind max_concurrency.", self.waiting),
            ("vllm:prompt_tokens_total", "counter", "Same as prompt tokens.", self.prompt_tokens),
            ("vllm:generation_tokens_total", "counter", "Same as completion tokens.", self.completion_tokens),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        return "\n".join(lines) + "\n"
