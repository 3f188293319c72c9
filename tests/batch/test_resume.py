"""`nimflow batch` on 2,000 lines with faults, killed with SIGKILL mid-way and run again: each
line is answered once beyond those in flight at the kill, the output complete, ordered, valid."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from batch_support import answered, chat_line, cli_env, nimflow_argv, read_output, write_lines

from nimflow.testing import FakeServer

LINES = 2000
CONCURRENCY = 16


def test_killed_batch_resumes_sending_only_what_is_not_stored(tmp_path: Path, nimflow_home: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl", [chat_line(f"id-{i}", f"Line {i} asks. Answer {i}.") for i in range(LINES)]
    )
    output = tmp_path / "out.jsonl"
    faults = "429:0.03,500:0.03,malformed:0.03;retry_after=0.01"
    with FakeServer(latency_ms=10, faults=faults, log_limit=100_000) as fake:
        argv = nimflow_argv(
            "batch",
            str(source),
            "-o",
            str(output),
            "--server",
            f"endpoint:{fake.base_url}",
            "--concurrency",
            str(CONCURRENCY),
            "--ttl",
            "0",
        )
        env = {**cli_env(), "NIMFLOW_HOME": str(nimflow_home)}
        first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while len(answered(fake)) < LINES // 3 and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.02)
            assert first.poll() is None, "the batch ended before it could be killed"
            os.kill(first.pid, signal.SIGKILL)
        finally:
            first.wait(30)
        before_kill = Counter(answered(fake))
        assert LINES // 3 <= len(before_kill) < LINES
        assert not output.exists()  # never half-written

        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "batch done" in second.stderr and f"{LINES} requests" in second.stderr

        counts = Counter(answered(fake))
        faulted = Counter(r.fault for r in fake.requests if r.fault)
    assert set(faulted) == {"429", "500", "malformed"}
    prompts = [f"Line {i} asks. Answer {i}." for i in range(LINES)]
    assert set(counts) == set(prompts)  # every line answered
    twice = [p for p, n in counts.items() if n > 1]
    assert all(counts[p] == 2 for p in twice)
    # Answered twice: only those in flight (or finished but not yet committed) at the kill.
    assert all(p in before_kill for p in twice)
    assert len(twice) <= 4 * CONCURRENCY, twice
    print(f"answered before the kill: {len(before_kill)}, answered twice: {len(twice)}")
    out = read_output(output)
    assert [o["custom_id"] for o in out] == [f"id-{i}" for i in range(LINES)]
    for i, o in enumerate(out):
        assert o["error"] is None and o["response"]["status_code"] == 200, o
        assert o["response"]["body"]["choices"][0]["message"]["content"] == prompts[i]
