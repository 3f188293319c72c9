"""Two `nimflow run` processes share an autoscaled actor: never more than max replicas between them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .support import FAKE, MODEL, running

PIPELINE = f"""
import nimflow as nf

env = nf.ActorEnvironment(
    "shared", nf.LocalProcess(command={FAKE!r}, model={MODEL!r}, startup_timeout=30),
    replica_count=1, max_concurrency=4, scaledown_seconds=1, ttl_seconds=0,
)


@env.task(cache=True, cache_version="1")
async def ask(text: str) -> int:
    llm = nf.current_actor()
    await llm.client.chat.completions.create(model=llm.model, messages=[{{"role": "user", "content": text}}])
    return len(llm.replica_urls)


@nf.task
def texts(tag: str, n: int) -> list[str]:
    return [f"{{tag}} item {{i}}. It is short." for i in range(n)]


@nf.workflow
def burst(tag: str = "a", n: int = 300) -> list[int]:
    return nf.map_task(ask, concurrency=32)(text=texts(tag=tag, n=n))
"""


def test_two_runs_never_run_more_than_max_replicas_between_them(tmp_path: Path) -> None:
    pipeline = tmp_path / "shared_pipeline.py"
    pipeline.write_text(PIPELINE)
    env = dict(os.environ)
    logs = [(tmp_path / f"{tag}.log").open("w") for tag in ("a", "b")]
    # The pipeline says 1 replica; the command line makes it (1, 3) for both runs.
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "nimflow", "run", str(pipeline), "--tag", tag, "--replicas", "shared=1:3"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for tag, log in zip(("a", "b"), logs, strict=True)
    ]
    most = 0
    deadline = time.monotonic() + 80
    try:
        while any(p.poll() is None for p in runs) and time.monotonic() < deadline:
            most = max(most, len(running("shared")))
            time.sleep(0.05)
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"{tag}.log").read_text() for tag in ("a", "b")]
    assert [p.returncode for p in runs] == [0, 0], outputs
    assert 2 <= most <= 3, (most, outputs)
    assert any("replicas (backlog" in out for out in outputs), outputs
