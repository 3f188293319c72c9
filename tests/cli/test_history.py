"""The read API the CLI goes through: runs, task runs, the interrupted rule, the cache."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from nimflow import _history
from nimflow._exceptions import UserInputError
from nimflow._history import error_message
from nimflow._store import CacheEntry, Run, Store, TaskRun


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store.open()
    try:
        yield opened
    finally:
        opened.close()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_a_running_run_whose_process_is_gone_is_interrupted(store: Store) -> None:
    started = time.time() - 100
    store.add(Run(id="dead00000001", workflow="wf", status="running", pid=dead_pid(), started_at=started))
    store.add(TaskRun(id="dead00000001/n1", run_id="dead00000001", node="n1", task="t", status="succeeded",
                      started_at=started, ended_at=started + 3))  # fmt: skip
    store.add(TaskRun(id="dead00000001/n2", run_id="dead00000001", node="n2", task="m", status="running",
                      started_at=started + 4))  # fmt: skip
    store.add(Run(id="live00000001", workflow="wf", status="running", pid=None, started_at=started))

    run = _history.find_run(store, "dead")
    assert run.status == "interrupted"
    assert run.ended_at == started + 4  # frozen at the last sign of life, not growing
    nodes = {t.node: t for t in _history.task_runs(store, run)}
    assert nodes["n1"].status == "succeeded" and nodes["n2"].status == "interrupted"
    assert nodes["n2"].ended_at == started + 4
    assert _history.find_run(store, "live").status == "running"


def test_a_stale_heartbeat_means_interrupted_and_freezes_the_duration(store: Store) -> None:
    import os

    now = time.time()
    beat = now - _history.STALE_HEARTBEAT_SECONDS - 5
    # Its pid is this (live) process: only the heartbeat tells.
    store.add(Run(id="beat00000001", workflow="wf", pid=os.getpid(), started_at=now - 200, heartbeat_at=beat))
    store.add(Run(id="beat00000002", workflow="wf", pid=os.getpid(), started_at=now - 200, heartbeat_at=now))
    stale = _history.find_run(store, "beat00000001")
    assert stale.status == "interrupted" and stale.ended_at == beat
    assert stale.seconds == pytest.approx(200 - _history.STALE_HEARTBEAT_SECONDS - 5)
    assert _history.find_run(store, "beat00000002").status == "running"


def test_find_run_by_prefix_latest_and_list(store: Store) -> None:
    with pytest.raises(UserInputError, match="no runs yet"):
        _history.latest_run(store)
    store.add(Run(id="abc111", workflow="a", status="succeeded", started_at=1.0, ended_at=2.0))
    store.add(Run(id="abc222", workflow="b", status="failed", started_at=3.0, ended_at=4.0))
    assert _history.latest_run(store).id == "abc222"
    assert _history.find_run(store, None).id == "abc222"
    assert _history.find_run(store, "abc1").workflow == "a"
    with pytest.raises(UserInputError, match="ambiguous"):
        _history.find_run(store, "abc")
    with pytest.raises(UserInputError, match="no run 'zzz'"):
        _history.find_run(store, "zzz")
    assert [r.id for r in _history.list_runs(store, 1)] == ["abc222"]
    assert _history.list_runs(store)[1].seconds == 1.0


def test_cancelled_runs_say_why(store: Store) -> None:
    for run_id, error in [("c1", "cancelled by nimflow kill"), ("c2", "cancelled (Ctrl-C)"),
                          ("c3", "KeyboardInterrupt: "), ("c4", None)]:  # fmt: skip
        store.add(
            Run(id=run_id, workflow="wf", status="cancelled", started_at=1.0, ended_at=2.0, error=error)
        )
    texts = [_history.find_run(store, r).status_text for r in ("c1", "c2", "c3", "c4")]
    assert texts == ["cancelled by nimflow kill", "cancelled (Ctrl-C)", "cancelled (Ctrl-C)", "cancelled"]


def test_cache_summary_and_clear(store: Store) -> None:
    for i, (task, version) in enumerate([("a.t", "1"), ("a.t", "2"), ("b.very_long_task_name", "1")]):
        store.add(CacheEntry(key=f"k{i}", task=task, cache_version=version, source_hash="h", output="[1, 2]"))
    summary = {s.task: s for s in _history.cache_summary(store)}
    assert summary["a.t"].entries == 2 and summary["a.t"].versions == ["1", "2"]
    assert summary["a.t"].bytes == 12
    assert _history.clear_cache(store, "a.t") == 2
    assert _history.clear_cache(store, "a.t") == 0
    assert _history.clear_cache(store, None) == 1
    assert _history.cache_summary(store) == []


def test_error_message_keeps_the_whole_message_and_drops_the_traceback() -> None:
    def raise_it() -> None:
        raise ValueError(
            "the server exited with code 3 while starting. Last log lines:\n  line one\n  line two"
        )

    import traceback

    try:
        raise_it()
    except ValueError as exc:
        stored = "".join(traceback.format_exception(exc))
    assert error_message(stored) == (
        "ValueError: the server exited with code 3 while starting. Last log lines:\n  line one\n  line two"
    )
    assert error_message("3 of 5 items failed") == "3 of 5 items failed"
    qualified = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\nnimflow._exceptions.ServerExitedError: exited\ntail'
    assert error_message(qualified) == "ServerExitedError: exited\ntail"
