"""`--workers` with `--no-cache`: the items are computed once, in one process, not once per worker."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import nimflow as nf
from nimflow._loader import pick_workflow

PIPELINE = textwrap.dedent(
    """
    import functools
    import os

    import nimflow as nf

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.task(cache=True)
    def mark(i: int, log: str) -> int:
        with open(log, "a") as f:
            f.write(f"{i} {os.getpid()}\\n")
        return i

    @nf.workflow
    def wf(n: int, log: str) -> list[int]:
        return nf.map_task(functools.partial(mark, log=log))(i=items(n=n))
    """
)


def test_no_cache_with_two_workers_computes_each_item_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NIMFLOW_HOME", str(tmp_path / "home"))
    file = tmp_path / "pipeline.py"
    file.write_text(PIPELINE)
    log = tmp_path / "calls.txt"
    wf = pick_workflow(file, None)
    result = nf.run(wf, n=20, log=str(log), use_cache=False, workers=2, source_file=str(file))
    assert result.outputs == list(range(20))
    lines = log.read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == list(range(20))
    assert "--no-cache runs in one process" in caplog.text
