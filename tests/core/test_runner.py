from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import anyio
import pytest
from sqlmodel import col, select

import nimflow as nf
from nimflow._store import Run, Store, TaskRun

attempts: Counter[str] = Counter()


@nf.task(retries=2)
def flaky(x: int) -> int:
    attempts["flaky"] += 1
    if attempts["flaky"] < 3:
        raise ConnectionError("try again")
    return x


@nf.task(timeout=0.2)
async def sleepy(x: int) -> int:
    await anyio.sleep(5)
    return x


@nf.task(cache=True)
def good(x: int) -> int:
    attempts["good"] += 1
    return x * 10


@nf.task
def boom(x: int) -> int:
    raise RuntimeError("boom at " + str(x))


@nf.task
def after(x: int) -> int:
    return x


def _rows(run_id: str) -> list[TaskRun]:
    with Store.open() as store, store.session() as session:
        return list(session.exec(select(TaskRun).where(TaskRun.run_id == run_id).order_by(col(TaskRun.id))))


def test_retries_are_attempted_and_recorded() -> None:
    attempts.clear()

    @nf.workflow
    def wf() -> int:
        return flaky(x=5)  # type: ignore[no-any-return]

    result = nf.run(wf)
    assert result.outputs == 5
    [row] = _rows(result.run_id)
    assert (row.status, row.attempts, row.error) == ("succeeded", 3, None)


def test_timeout_fails_the_task_with_advice() -> None:
    @nf.workflow
    def wf() -> int:
        return sleepy(x=1)  # type: ignore[no-any-return]

    with pytest.raises(nf.RunFailedError, match=r"timed out after 0.2 s") as info:
        nf.run(wf)
    [row] = _rows(info.value.run_id)
    assert row.status == "failed" and "timed out" in (row.error or "")


def test_a_failing_task_keeps_finished_siblings_cached_and_skips_downstream() -> None:
    attempts.clear()

    @nf.workflow
    def wf() -> tuple[int, int]:
        ok = good(x=1)
        bad = boom(x=2)
        return ok, after(x=bad)

    with pytest.raises(nf.RunFailedError, match="boom at 2") as info:
        nf.run(wf)
    rows = {r.task.rsplit(".", 1)[-1]: r for r in _rows(info.value.run_id)}
    assert rows["good"].status == "succeeded"
    assert rows["boom"].status == "failed" and 'raise RuntimeError("boom at "' in (rows["boom"].error or "")
    assert rows["after"].status == "skipped"
    with Store.open() as store, store.session() as session:
        run = session.get(Run, info.value.run_id)
    assert run is not None and run.status == "failed" and "boom at 2" in (run.error or "")
    # The sibling's result was kept: a second run does not compute it again.
    with pytest.raises(nf.RunFailedError):
        nf.run(wf)
    assert attempts["good"] == 1


def test_runs_are_recorded_with_inputs_and_outputs(nimflow_home: Path) -> None:
    @nf.workflow
    def wf(x: int = 3) -> int:
        return good(x=x)  # type: ignore[no-any-return]

    result = nf.run(wf, x=4)
    with Store.open() as store, store.session() as session:
        run = session.get(Run, result.run_id)
    assert run is not None
    assert (run.status, run.inputs, run.outputs) == ("succeeded", '{"x":4}', "40")
    assert run.ended_at is not None and run.ended_at >= run.started_at
    db = sqlite3.connect(nimflow_home / "nimflow.db")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_any_sqlalchemy_url_via_nimflow_db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("NIMFLOW_DB_URL", url)

    @nf.workflow
    def wf() -> int:
        return good(x=1)  # type: ignore[no-any-return]

    result = nf.run(wf)
    db = sqlite3.connect(tmp_path / "elsewhere.db")
    assert db.execute("select status from run where id = ?", (result.run_id,)).fetchone() == ("succeeded",)


def test_inputs_are_validated_before_anything_runs() -> None:
    @nf.workflow
    def wf(n: int, names: list[str]) -> int:
        return good(x=n)  # type: ignore[no-any-return]

    with pytest.raises(nf.UserInputError, match="needs input 'names'"):
        nf.run(wf, n=1)
    with pytest.raises(nf.UserInputError, match="workflow input 'n': expected int"):
        nf.run(wf, n="many", names=[])
    with pytest.raises(nf.UserInputError, match="has no input \\['m'\\]"):
        nf.run(wf, n=1, names=[], m=2)


def test_a_large_sync_and_async_map_records_every_item() -> None:
    @nf.task(cache=True)
    def noop(x: int) -> int:
        return x

    @nf.task(cache=True)
    async def anoop(x: int) -> int:
        return x

    @nf.workflow
    def wf(xs: list[int]) -> tuple[list[int], list[int]]:
        return nf.map_task(noop)(x=xs), nf.map_task(anoop)(x=xs)

    xs = list(range(3000))
    result = nf.run(wf, xs=xs)
    assert result.outputs == (xs, xs)
    rows = _rows(result.run_id)
    assert sum(1 for r in rows if r.item is not None and r.status == "succeeded") == 6000
    again = nf.run(wf, xs=xs)
    assert again.cached == 6000


def test_tasks_can_write_their_own_tables_beside_the_run() -> None:
    from sqlmodel import Field, SQLModel

    class Note(SQLModel, table=True):
        id: int | None = Field(default=None, primary_key=True)
        run_id: str
        text: str

    @nf.task
    def save(texts: list[str]) -> int:
        with nf.session() as db:
            for text in texts:
                db.add(Note(run_id=nf.current_run_id() or "", text=text))
            db.commit()
        return len(texts)

    @nf.workflow
    def wf(texts: list[str]) -> int:
        return save(texts=texts)  # type: ignore[no-any-return]

    result = nf.run(wf, texts=["a", "b"])
    assert nf.current_run_id() is None
    with nf.session() as db:
        notes = db.exec(select(Note)).all()
    assert [(n.run_id, n.text) for n in notes] == [(result.run_id, "a"), (result.run_id, "b")]
