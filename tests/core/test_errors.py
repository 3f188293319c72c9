"""The whole error reaches the user: a nimflow error's full message (a server's exit code and log
tail, say) is kept in the run's failures, the task-run row, RunFailedError and `nimflow run`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlmodel import select

import nimflow as nf
from nimflow._store import Store, TaskRun

MESSAGE = (
    "the server exited with code 3 while starting. Last log lines:\n  loading weights\n  CUDA out of memory"
)


@nf.task
def start_server(x: int) -> int:
    raise nf.ServerExitedError(MESSAGE, exit_code=3, log_tail="loading weights\nCUDA out of memory")


@nf.task
def user_bug(x: int) -> int:
    raise ValueError(f"first line {x}\nsecond line {x}")


def _rows(run_id: str) -> dict[str, TaskRun]:
    with Store.open().session() as session:
        return {r.id: r for r in session.exec(select(TaskRun).where(TaskRun.run_id == run_id))}


def test_a_multi_line_nimflow_error_is_kept_whole() -> None:
    @nf.workflow
    def wf() -> int:
        return start_server(x=1)  # type: ignore[no-any-return]

    with pytest.raises(nf.RunFailedError) as info:
        nf.run(wf)
    assert f"start_server: ServerExitedError: {MESSAGE}" in str(info.value)
    [failure] = info.value.result.failures
    assert failure.error == f"ServerExitedError: {MESSAGE}" and failure.expected
    [row] = _rows(info.value.run_id).values()
    assert row.error == f"ServerExitedError: {MESSAGE}"  # the message says it all: no traceback


def test_a_failed_map_item_keeps_its_whole_message_and_user_code_its_traceback() -> None:
    @nf.workflow
    def wf(xs: list[int]) -> list[int]:
        return nf.map_task(user_bug)(x=xs)  # type: ignore[no-any-return]

    with pytest.raises(nf.RunFailedError) as info:
        nf.run(wf, xs=[7])
    assert "map_user_bug[0]: ValueError: first line 7\nsecond line 7" in str(info.value)
    [failure] = info.value.result.failures
    assert failure.error == "ValueError: first line 7\nsecond line 7" and not failure.expected
    rows = _rows(info.value.run_id)
    item = rows[f"{info.value.run_id}/n1/0"].error or ""
    assert item.startswith("Traceback (most recent call last):")  # user code: `nimflow show` has it
    assert item.rstrip().endswith("ValueError: first line 7\nsecond line 7")
    assert "item 0: ValueError: first line 7\nsecond line 7" in (rows[f"{info.value.run_id}/n1"].error or "")


def test_nimflow_run_prints_the_whole_message(tmp_path: Path, nimflow_home: Path) -> None:
    pipeline = tmp_path / "exits.py"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            import nimflow as nf

            @nf.task
            def start(x: int) -> int:
                raise nf.ServerExitedError({MESSAGE!r}, exit_code=3, log_tail="")

            @nf.workflow
            def wf() -> int:
                return start(x=1)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "nimflow", "run", str(pipeline)],
        env={**os.environ, "NIMFLOW_HOME": str(nimflow_home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    for line in MESSAGE.splitlines():
        assert line.strip() in done.stderr
