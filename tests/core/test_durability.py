"""kill -9 in the middle of a 1,000-item map: the next run recomputes only what had not finished."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PIPELINE = textwrap.dedent(
    """
    import os, time
    import nimflow as nf

    LOG = os.environ["ITEM_LOG"]

    @nf.task(cache=True, cache_version="1")
    def work(x: int) -> int:
        time.sleep(0.004)
        with open(LOG, "a") as log:  # one line per executed item, written when it is done
            log.write(f"{x}\\n")
        return x * 2

    @nf.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @nf.workflow
    def big(n: int = 1000) -> list[int]:
        return nf.map_task(work, concurrency=8)(x=numbers(n=n))
    """
)


def _executed(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_kill_9_mid_map_loses_only_items_in_flight(tmp_path: Path, nimflow_home: Path) -> None:
    pipeline = tmp_path / "big.py"
    pipeline.write_text(PIPELINE)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    env = {**os.environ, "NIMFLOW_HOME": str(nimflow_home)}
    command = [sys.executable, "-m", "nimflow", "run", str(pipeline)]

    proc = subprocess.Popen(
        command, env={**env, "ITEM_LOG": str(first_log)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while len(_executed(first_log)) < 300 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed; make the map longer"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    executed_first = set(_executed(first_log))
    assert 300 <= len(executed_first) < 1000

    db = sqlite3.connect(nimflow_home / "nimflow.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    cached_after_kill = db.execute("select count(*) from cacheentry").fetchone()[0]
    db.close()
    # Finished items are saved; only the few in flight at the kill (8 workers) may be lost.
    assert len(executed_first) - 8 * 6 <= cached_after_kill <= len(executed_first)

    listed = subprocess.run(
        [sys.executable, "-m", "nimflow", "runs"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "interrupted" in listed.stdout  # marked running, but its process is gone

    second = subprocess.run(
        command, env={**env, "ITEM_LOG": str(second_log)}, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    executed_second = _executed(second_log)
    assert len(executed_second) == 1000 - cached_after_kill  # nothing finished is recomputed
    assert len(set(executed_second)) == len(executed_second)
    assert executed_first | set(executed_second) == set(range(1000))
    outputs = subprocess.run(
        [sys.executable, "-m", "nimflow", "outputs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outputs.stdout.count(",") == 999 and '"0"' not in outputs.stdout
