"""nimflow's fake OpenAI-compatible server, for tests, demos and benchmarks.

A real HTTP server on 127.0.0.1 (uvicorn, a raw ASGI app) speaking enough of the OpenAI API:
``POST /v1/chat/completions`` (also ``stream=true``), ``POST /v1/completions``,
``GET /v1/models`` (base model and LoRA adapters), ``GET /v1/health/ready``, ``GET /health``,
``GET /v1/metrics`` (Prometheus text). Answers are deterministic: a summary made from the
prompt's own sentences, or, with a JSON-schema ``response_format``, an instance valid for the
schema filled from the prompt. Tokens are whitespace-separated words.

Knobs: latency per request and per token, a cap on requests in flight, an API key, a context
length, and scripted faults (429 with Retry-After, 500, 503, hang, drop, malformed, truncate;
html; by rate or exact sequence, see ``FaultPlan``), or answers scripted per request in
Python (``FakeServer(script=...)`` returning a ``Reply``). All options are the fields of
``FakeOptions``. ``/v1/metrics`` reports ``vllm:num_requests_running`` and
``vllm:num_requests_waiting`` (requests queued behind ``max_concurrency``) as vLLM does. Every response carries ``x-nimflow-fake: 1``.

Run it in a thread (``FakeServer``), as a process (``spawn`` / ``FakeServerProcess``,
``python -m nimflow.testing``, ``nimflow fake-server``) or through the pytest fixture
``fake_openai`` (``nimflow.testing.plugin``).

Control endpoints (no API key needed, not logged): ``GET /_fake/log`` and ``DELETE /_fake/log``
(the request log), ``GET /_fake/faults`` and ``POST /_fake/faults`` (body ``{"spec": "429:0.1"}``
or ``{"rates": {...}, "sequence": [...], "retry_after": s, "hang_seconds": s}``),
``GET /_fake/config`` and ``POST /_fake/config`` (live options: latencies, faults).

Speed (``bench/fake_server_load.py``): in its own process (uvicorn with httptools and uvloop),
at zero latency, 30,000 non-streaming chat completions from an aiohttp client in another
process with 256 concurrent keep-alive connections, on a 2-core machine: 4,400 requests/s end
to end, bound by the client (3.6 s of client CPU against 2.2 s of server CPU). The server
spends about 75 us of CPU per request, so one core sustains about 13,000 requests/s; with
log_limit=0 it skips the request log.

The server modules import only the stdlib, uvicorn and anyio, so ``nimflow/testing`` can be
copied alone into a minimal image. Names are imported lazily so that the pytest plugin stays
cheap to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._faults import FaultKind, FaultPlan
    from ._http import Reply, Script
    from ._log import RequestRecord
    from ._options import FakeOptions
    from ._server import FakeServer, FakeServerProcess, command, serve, spawn

__all__ = [
    "FakeOptions",
    "FakeServer",
    "FakeServerProcess",
    "FaultKind",
    "FaultPlan",
    "Reply",
    "RequestRecord",
    "Script",
    "command",
    "serve",
    "spawn",
]

_WHERE = {
    "FakeOptions": "._options",
    "Reply": "._http",
    "Script": "._http",
    "command": "._server",
    "FakeServer": "._server",
    "FakeServerProcess": "._server",
    "serve": "._server",
    "spawn": "._server",
    "FaultKind": "._faults",
    "FaultPlan": "._faults",
    "RequestRecord": "._log",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
