"""Errors reach the user whole and short; killed and cancelled runs say so everywhere."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nimflow import cli
from nimflow._exceptions import StorageError
from nimflow._store import Run, Store

from .support import nimflow

MULTILINE = textwrap.dedent(
    """
    import nimflow as nf

    @nf.task
    def start(x: int) -> int:
        raise RuntimeError("the server exited with code 3 while starting. Last log lines:\\n"
                           "  loading weights\\n  CUDA out of memory")

    @nf.workflow
    def wf(x: int = 1) -> int:
        return start(x=x)
    """
)

SLOW = textwrap.dedent(
    """
    import time
    import nimflow as nf

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.task
    def slow(i: int) -> int:
        print(f"started {i}", flush=True)
        time.sleep(120)
        return i

    @nf.workflow
    def wf(n: int = 1) -> list[int]:
        return nf.map_task(slow)(i=items(n=n))
    """
)


def test_a_storage_error_is_one_short_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unwritable(_url: str | None = None) -> Store:
        raise StorageError("NIMFLOW_HOME=/ro is not writable: point NIMFLOW_HOME at a writable folder.")

    monkeypatch.setattr(Store, "open", unwritable)
    monkeypatch.delenv("NIMFLOW_LOG", raising=False)
    assert cli.invoke(["runs"]) == 1
    err = capsys.readouterr().err
    assert err == "error: NIMFLOW_HOME=/ro is not writable: point NIMFLOW_HOME at a writable folder.\n"
    monkeypatch.setenv("NIMFLOW_LOG", "DEBUG")
    assert cli.invoke(["show"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("point NIMFLOW_HOME at a writable folder.")


def test_the_whole_message_in_run_and_show_and_the_traceback_on_request(tmp_path: Path) -> None:
    path = tmp_path / "multi.py"
    path.write_text(MULTILINE)
    ran = nimflow("run", str(path), cwd=tmp_path)
    assert ran.returncode == 1
    whole = "exited with code 3 while starting. Last log lines:\n  loading weights\n  CUDA out of memory"
    assert f"failed start: RuntimeError: the server {whole}" in ran.stderr
    shown = nimflow("show", cwd=tmp_path)
    lines = [line.lstrip("│└├─ ") for line in shown.stdout.splitlines()]  # the tree's guides
    at = lines.index("RuntimeError: the server exited with code 3 while starting. Last log lines:")
    assert lines[at + 1 : at + 3] == ["loading weights", "CUDA out of memory"]
    assert "Traceback" not in shown.stdout
    assert "--traceback" in shown.stdout
    traced = nimflow("show", "--traceback", cwd=tmp_path)
    assert "Traceback (most recent call last)" in traced.stdout and 'multi.py", line' in traced.stdout


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    path = tmp_path / "slow.py"
    path.write_text(SLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimflow", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(10):  # the item says when it runs
        if proc.stdout.readline().startswith("started 0"):
            break
    db = Path(os.environ["NIMFLOW_HOME"]) / "nimflow.db"
    query = "select count(*) from taskrun where task = 'slow.slow' and status = 'running'"
    for _ in range(200):  # and its node's row is committed
        with sqlite3.connect(db) as conn:
            if conn.execute(query).fetchone()[0]:
                break
        time.sleep(0.05)
    return proc


def test_a_killed_run_is_interrupted_everywhere_and_its_duration_is_frozen(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    listed = nimflow("runs", cwd=tmp_path)
    assert "interrupted" in listed.stdout and "running" not in listed.stdout
    duration = re.compile(r"interrupted\s*│[^│]*│\s*([\d.]+s)")
    first = duration.findall(listed.stdout)
    time.sleep(1.1)
    assert len(first) == 1 and duration.findall(nimflow("runs", cwd=tmp_path).stdout) == first
    shown = nimflow("show", cwd=tmp_path)
    assert "running" not in shown.stdout
    assert shown.stdout.splitlines()[0].split()[3] == "interrupted"
    assert "slow interrupted" in shown.stdout  # the map node that was running
    outputs = nimflow("outputs", cwd=tmp_path)
    assert outputs.returncode == 1 and "status: interrupted" in outputs.stderr


def test_nimflow_kill_stops_the_run_with_sigterm(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    try:
        killed = nimflow("kill", latest_id(), cwd=tmp_path)
        assert killed.returncode == 0, killed.stderr
        assert "asked run" in killed.stdout
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    status = nimflow("runs", cwd=tmp_path).stdout
    assert "running" not in status
    assert "cancelled by nimflow kill" in status or "interrupted" in status
    again = nimflow("kill", latest_id(), cwd=tmp_path)
    assert again.returncode == 1 and "is not running" in again.stderr


def latest_id() -> str:
    from nimflow._history import latest_run

    store = Store.open()
    try:
        return latest_run(store).id
    finally:
        store.close()


def test_cancelled_runs_show_their_reason(tmp_path: Path) -> None:
    store = Store.open()
    try:
        store.add(Run(id="kill00000001", workflow="wf", status="cancelled", started_at=1.0, ended_at=3.0,
                      error="cancelled by nimflow kill"))  # fmt: skip
        store.add(Run(id="ctrl00000001", workflow="wf", status="cancelled", started_at=2.0, ended_at=3.0,
                      error="cancelled (Ctrl-C)"))  # fmt: skip
    finally:
        store.close()
    listed = nimflow("runs", cwd=tmp_path).stdout
    assert "cancelled by nimflow kill" in listed and "cancelled (Ctrl-C)" in listed
    assert "cancelled by nimflow kill" in nimflow("show", "kill", cwd=tmp_path).stdout
    outputs = nimflow("outputs", "ctrl", cwd=tmp_path)
    assert "status: cancelled (Ctrl-C)" in outputs.stderr
