"""The fake server as a replica whose request log outlives it: on SIGTERM (how a Ray replica is
stopped) it writes the chat prompts it answered to DIR/<port>-<pid>.json, so a test sees what
every replica served, also the replicas a scale-down stopped.

    python logged_fake.py DIR PORT LATENCY_MS MAX_CONCURRENCY
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from nimflow.testing import FakeServer


def main() -> None:
    folder, port, latency, cap = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = FakeServer(
        host="127.0.0.1", port=port, model="fake-model", latency_ms=latency, max_concurrency=cap
    ).start()
    stop.wait()
    server.stop()
    answered = [r.prompt for r in server.requests if r.path == "/v1/chat/completions" and r.status == 200]
    node = os.environ.get("RAY_RAYLET_PID", "")  # one raylet per Ray node: which node served
    out = folder / f"{port}-{os.getpid()}.json"
    out.with_suffix(".tmp").write_text(json.dumps({"node": node, "answered": answered}))
    out.with_suffix(".tmp").rename(out)


if __name__ == "__main__":
    main()
