"""A run stopped from outside is recorded as such: Ctrl-C and SIGTERM (what `nimflow kill` sends)
cancel it, its row says which, its running nodes end cancelled, and a heartbeat shows it lived."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PIPELINE = textwrap.dedent(
    """
    import anyio
    import nimflow as nf

    @nf.task(cache=True)
    async def wait(i: int) -> int:
        if i >= 3:
            await anyio.sleep(120)  # still waiting when the run is stopped
        return i

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.workflow
    def wf(n: int = 6) -> list[int]:
        return nf.map_task(wait)(i=items(n=n))
    """
)


def _query(home: Path, sql: str) -> list[tuple[object, ...]]:
    db = home / "nimflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute(sql))
        except sqlite3.OperationalError:  # the tables are not there yet
            return []


def _stop_mid_map(tmp_path: Path, home: Path, signum: int) -> subprocess.CompletedProcess[str]:
    """Start the pipeline, wait until three items are saved and the run has beaten its heart
    once, then send `signum`."""
    pipeline = tmp_path / "waiting.py"
    pipeline.write_text(PIPELINE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimflow", "run", str(pipeline)],
        env={**os.environ, "NIMFLOW_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            cached = _query(home, "select count(*) from cacheentry")
            beats = _query(home, "select heartbeat_at > started_at from run")
            if cached == [(3,)] and beats == [(1,)]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        assert _query(home, "select heartbeat_at > started_at from run") == [(1,)]
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(
    ("signum", "reason", "exit_code"),
    [(signal.SIGINT, "cancelled (Ctrl-C)", 130), (signal.SIGTERM, "cancelled by nimflow kill", 1)],
)
def test_a_stopped_run_is_recorded_cancelled_with_its_reason(
    tmp_path: Path, nimflow_home: Path, signum: int, reason: str, exit_code: int
) -> None:
    done = _stop_mid_map(tmp_path, nimflow_home, signum)
    assert done.returncode == exit_code, done.stderr
    [(status, error, ended_at, heartbeat_at)] = _query(
        nimflow_home, "select status, error, ended_at, heartbeat_at from run"
    )
    assert (status, error) == ("cancelled", reason)
    assert heartbeat_at == ended_at
    nodes = dict(_query(nimflow_home, "select node, status from taskrun where item is null"))
    assert nodes == {"n1": "succeeded", "n2": "cancelled"}  # the map was running: not left running
    items = _query(nimflow_home, "select item, status from taskrun where item is not null order by item")
    assert items == [(0, "succeeded"), (1, "succeeded"), (2, "succeeded")]
    if signum == signal.SIGTERM:
        assert "cancelled by nimflow kill" in done.stderr and "run the same command to resume" in done.stderr
