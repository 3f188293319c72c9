"""`--workers 2`: both processes compute items of a cached map; what follows it runs once."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

import nimflow as nf
from nimflow._loader import pick_workflow

PIPELINE = textwrap.dedent(
    """
    import functools
    import time

    import nimflow as nf

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.task(cache=True)
    def slow(i: int) -> int:
        time.sleep(0.3)
        return i

    @nf.task
    def save(values: list[int], log: str) -> int:
        with open(log, "a") as f:  # a side effect that must happen once per run
            f.write(f"{len(values)}\\n")
        return sum(values)

    @nf.workflow
    def wf(n: int, log: str) -> int:
        return save(values=nf.map_task(slow)(i=items(n=n)), log=log)
    """
)


def test_two_workers_split_a_map_and_run_what_follows_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("NIMFLOW_HOME", str(home))
    monkeypatch.delenv("NIMFLOW_DB_URL", raising=False)
    file = tmp_path / "pipeline.py"
    file.write_text(PIPELINE)
    log = tmp_path / "saved.txt"
    result = nf.run(pick_workflow(file, None), n=64, log=str(log), workers=2, source_file=str(file))
    assert result.outputs == sum(range(64))
    assert log.read_text().splitlines() == ["64"]
    with sqlite3.connect(home / "nimflow.db") as db:
        pids = db.execute(
            "SELECT pid, COUNT(*) FROM taskrun WHERE run_id = ? AND item IS NOT NULL GROUP BY pid",
            (result.run_id,),
        ).fetchall()
    assert sum(count for _, count in pids) == 64
    assert len(pids) == 2, pids  # the worker computed items too, not only the run's process
