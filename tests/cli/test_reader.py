"""The read commands read a current SQLite database without SQLAlchemy; others through a Store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from nimflow import _history, _schema
from nimflow._reader import newest_revision, open_reader
from nimflow._store import Run, Store


def test_the_reader_knows_the_schema_head() -> None:
    assert newest_revision() == _schema.HEAD


def test_runs_and_show_on_a_current_database_load_no_sqlalchemy(tmp_path: Path) -> None:
    env = {"NIMFLOW_HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "nimflow", "runs"], check=True, env=env, capture_output=True)
    script = (
        "import sys\nfrom nimflow.cli import invoke\ninvoke(['runs'])\ninvoke(['show'])\ninvoke(['cache', 'ls'])\n"
        "print(sorted(m for m in ('sqlalchemy', 'sqlmodel', 'anyio')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_new_database_is_created_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("NIMFLOW_DB_URL", raising=False)
    with open_reader() as reader:
        assert _history.list_runs(reader) == []
    store = Store.open(f"sqlite:///{tmp_path / 'nimflow.db'}")
    store.add(Run(id="a_b%1", workflow="w", status="succeeded", started_at=time.time(), ended_at=time.time()))
    store.add(Run(id="axbz2", workflow="w", status="succeeded", started_at=time.time(), ended_at=time.time()))
    store.close()
    with open_reader() as reader:
        assert [r.id for r in _history.list_runs(reader)] == ["axbz2", "a_b%1"]
        # `_` and `%` in a prefix match only themselves
        assert _history.find_run(reader, "a_b").id == "a_b%1"
        assert _history.scale_events(reader, "a_b%1") == []
