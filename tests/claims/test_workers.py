"""`nimflow run --workers 2`: the same output as one process, each item answered once, one run."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nimflow.testing import FakeServerProcess

from .support import answered, command, expected, map_rows, nimflow, runs, start, write_pipeline

N = 1000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_answer_each_item_once_in_one_run(
    tmp_path: Path, store_url: str, fake: FakeServerProcess
) -> None:
    proc = start(command(write_pipeline(tmp_path), fake, N, "--workers", "2"))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert f"{N} map items, 0 cache hits" in out  # the workers' items are not cache hits
    counts = answered(fake)
    assert set(counts) == set(range(N))
    assert {item: c for item, c in counts.items() if c != 1} == {}
    ((run_id, status, outputs),) = runs(store_url)  # one run, with the whole output
    assert (status, outputs) == ("succeeded", expected(N))
    items = map_rows(store_url)
    assert sorted(item for _, item, _, _, _ in items) == list(range(N))  # one row per item
    assert not any(hit for _, _, hit, _, _ in items)
    pids = {pid for _, _, _, _, pid in items}
    assert proc.pid in pids and len(pids) == 2  # both processes computed items
    shown = nimflow("show", run_id)
    assert f"{socket.gethostname()}:{proc.pid}" in shown


def test_workers_must_be_one_or_more(tmp_path: Path) -> None:
    import nimflow as nf

    @nf.workflow
    def nothing() -> int:
        return 1

    with pytest.raises(nf.UserInputError, match="workers must be 1 or more"):
        nf.run(nothing, workers=0)
