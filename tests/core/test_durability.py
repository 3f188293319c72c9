"""kill -9 in the middle of a 2,000-item map of chat completions: what the server answered is stored,
but for the items in flight and those that finished within the commit window; the rerun
recomputes exactly the items not stored. Counted from the fake server's own request log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from nimflow.testing import FakeServerProcess, spawn

CONCURRENCY = 32
# Generous for a shared machine: a commit lags ~100 ms; what the server answered in the last
# WINDOW seconds before the kill may still be on its way to the database.
WINDOW = 0.5

PIPELINE = textwrap.dedent(
    f"""
    import nimflow as nf

    llm = nf.ActorEnvironment(
        name="llm", server=nf.OpenAIEndpoint("http://127.0.0.1:9/v1", model="base"), ttl_seconds=0
    )

    @llm.task(cache=True, cache_version="1")
    async def answer(x: int) -> str:
        reply = await nf.current_actor().client.chat.completions.create(
            model="base", messages=[{{"role": "user", "content": f"item {{x}}. Say it."}}], max_tokens=8
        )
        return f"{{x}}|{{reply.choices[0].message.content}}"

    @nf.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @nf.workflow
    def big(n: int = 2000) -> list[str]:
        return nf.map_task(answer, concurrency={CONCURRENCY})(x=numbers(n=n))
    """
)


def _answers(fake: FakeServerProcess) -> dict[int, float]:
    """Item -> when the server finished answering it (200s only)."""
    return {
        int(r.prompt.split()[1].rstrip(".")): r.ended
        for r in fake.requests
        if r.path.endswith("/chat/completions") and r.status == 200
    }


def _stored(url: str) -> set[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            outputs = conn.execute(text("select output from cacheentry")).scalars()
            return {int(o.strip('"').split("|")[0]) for o in outputs}
    finally:
        engine.dispose()


@pytest.fixture
def fake() -> FakeServerProcess:
    server = spawn(model="base", latency_ms=20, log_limit=20_000)
    yield server
    server.stop()


def _run_until_killed(command: list[str], fake: FakeServerProcess, answers: int) -> float:
    """Start the run, SIGKILL it once the server has answered `answers` requests; the kill time."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 200
        while proc.poll() is None and time.monotonic() < deadline and len(_answers(fake)) < answers:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        return time.time()
    finally:
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_kill_9_loses_only_items_in_flight_or_in_the_commit_window(
    tmp_path: Path, store_url: str, fake: FakeServerProcess
) -> None:
    pipeline = tmp_path / "big.py"
    pipeline.write_text(PIPELINE)
    command = [
        sys.executable,
        "-m",
        "nimflow",
        "run",
        str(pipeline),
        "--server",
        f"llm=endpoint:{fake.base_url}",
    ]
    stored: set[int] = set()
    # Killed three times at different depths of the map, each rerun resuming the previous one.
    for answers in (250, 500, 500):
        fake.clear_log()
        killed_at = _run_until_killed(command, fake, answers)
        answered = _answers(fake)
        assert not set(answered) & stored  # a stored item is never recomputed
        now_stored = _stored(store_url)
        assert stored <= now_stored <= stored | set(answered)
        lost = set(answered) - now_stored
        recent = sum(1 for ended in answered.values() if ended >= killed_at - WINDOW)
        assert len(lost) <= CONCURRENCY + recent, (len(answered), len(now_stored - stored), recent)
        stored = now_stored

    fake.clear_log()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=200)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(_answers(fake)) == sorted(set(range(2000)) - stored)
    assert _stored(store_url) == set(range(2000))
