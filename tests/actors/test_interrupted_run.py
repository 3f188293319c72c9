"""Ctrl-C in the middle of a run: the finished items stay saved and a TTL-0 server is stopped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from nimflow.actors.launchers.process import ProcessLauncher

PIPELINE = textwrap.dedent(
    """
    import sys
    import anyio
    import nimflow as nf

    FAKE = f"{sys.executable} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model m"
    actor = nf.ActorEnvironment("interrupted", nf.LocalProcess(command=FAKE, model="m"), ttl_seconds=0)

    @actor.task(cache=True)
    async def ask(i: int) -> str:
        if i >= 3:
            await anyio.sleep(120)  # the run is interrupted while these wait
        reply = await nf.current_actor().client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"Item {i} is here."}]
        )
        print(f"done {i}", flush=True)
        return reply.choices[0].message.content or ""

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.workflow
    def wf(n: int = 6) -> list[str]:
        return nf.map_task(ask)(i=items(n=n))
    """
)


def test_ctrl_c_stops_a_ttl_zero_server_and_keeps_finished_items(tmp_path: Path) -> None:
    pipeline = tmp_path / "interrupted.py"
    pipeline.write_text(PIPELINE)
    env = dict(os.environ)  # NIMFLOW_HOME: this test's own state folder
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimflow", "run", str(pipeline)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(ProcessLauncher().find("interrupted")) < 1:
            time.sleep(0.1)
        found = ProcessLauncher().find("interrupted")
        assert len(found) == 1, (
            proc.stderr.read() if proc.poll() is not None and proc.stderr else "no replica"
        )
        [replica] = found
        # Items 0-2 answer at once and are saved; 3-5 are still waiting when Ctrl-C comes.
        while time.monotonic() < deadline and _cached() < 3:
            time.sleep(0.05)
        assert _cached() == 3
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert "done 2" in out and "done 3" not in out
    assert "cancelled" in err and "run the same command to resume" in err
    assert ProcessLauncher().find("interrupted") == []  # no server left behind
    assert not ProcessLauncher().status(replica).running
    runs = subprocess.run(
        [sys.executable, "-m", "nimflow", "show"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "cancelled" in runs.stdout
    assert _cached() == 3  # the finished items are kept for the next run


def _cached() -> int:
    db = Path(os.environ["NIMFLOW_HOME"]) / "nimflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(
                conn.execute("select count(*) from cacheentry where task = 'interrupted.ask'").fetchone()[0]
            )
        except sqlite3.OperationalError:  # the table is not there yet
            return 0
