"""Several `nimflow run` processes of one cached map on one database compute each item once; a
process killed mid-map loses nothing but the items it had in flight. Counted from the fake
server's own request log."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from nimflow._store import Store
from nimflow.testing import FakeServerProcess

from .support import (
    CONCURRENCY,
    answered,
    command,
    expected,
    map_rows,
    nimflow,
    node_counts,
    runs,
    start,
    unfinished_claims,
    write_pipeline,
)

N = 2000
# What the server answered in the last WINDOW seconds before a kill may not be committed yet.
WINDOW = 0.5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_processes_answer_each_item_once(
    tmp_path: Path, store_url: str, fake: FakeServerProcess
) -> None:
    Store.open().close()  # the schema first (opening it concurrently is tested in tests/store)
    cmd = command(write_pipeline(tmp_path), fake, N)
    procs = [start(cmd) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    counts = answered(fake)
    assert set(counts) == set(range(N))
    assert {item: c for item, c in counts.items() if c != 1} == {}
    rows = runs(store_url)
    assert [(status, outputs) for _, status, outputs in rows] == [("succeeded", expected(N))] * 3
    items = map_rows(store_url)
    assert len(items) == 3 * N  # every run records every item: computed here or waited for
    computed = [(run_id, item) for run_id, item, hit, _host, _pid in items if not hit]
    assert sorted(item for _, item in computed) == list(range(N))
    # Who computed what: `runs` names each run's process, `show` the processes that ran its items.
    listing = nimflow("runs")
    host = socket.gethostname()
    for proc in procs:
        assert f"{host}:{proc.pid}" in listing
    for run_id, _, _ in rows:
        mine = sum(1 for r, _item, hit, _h, _p in items if r == run_id and not hit)
        shown = nimflow("show", run_id)
        if mine:
            assert "computed by" in shown and f"({mine})" in shown


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_process_leaves_its_items_to_the_others(
    tmp_path: Path, store_url: str, fake: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMFLOW_CLAIM_LEASE_SECONDS", "2")  # a dead claimer's items free up soon
    Store.open().close()
    cmd = command(write_pipeline(tmp_path), fake, N)
    victim, *others = [start(cmd) for _ in range(3)]
    deadline = time.monotonic() + 120
    # Killed a quarter in, while it computes items it claimed (on a loaded machine it may start
    # after the others have claimed most of the map, and then hold only what it already stored).
    while victim.poll() is None and time.monotonic() < deadline and (
        sum(answered(fake).values()) < N // 4 or not unfinished_claims(store_url, victim.pid)
    ):
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.communicate(timeout=30)
    # What the victim left: claimed, not stored. Only a takeover can compute these.
    orphaned = unfinished_claims(store_url, victim.pid)
    assert orphaned >= 1, "the victim had no item in flight when killed"
    for proc in others:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    counts = answered(fake)
    assert set(counts) == set(range(N))
    twice = {item for item, c in counts.items() if c > 1}
    assert all(counts[item] == 2 for item in twice)
    # Answered twice: only what the victim had in flight, or had answered but not yet committed.
    recent = sum(1 for r in fake.requests if r.status == 200 and r.ended >= killed_at - WINDOW)
    assert len(twice) <= CONCURRENCY + recent, (len(twice), recent)
    finished = [(status, outputs) for _, status, outputs in runs(store_url) if status != "running"]
    assert finished == [("succeeded", expected(N))] * 2
    # Every orphaned key was taken over by a survivor once its lease expired (more, when a lease
    # expired before `orphaned` was read), and the survivors say so.
    assert sum(t for _, t in node_counts(store_url).values()) >= orphaned
