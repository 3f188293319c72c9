"""Storage failures the user can fix raise StorageError naming the setting and the fix."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from nimflow._engine import explain, masked
from nimflow._exceptions import StorageError
from nimflow._store import Run, Store


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write: chmod 555, or for root (whom permissions do not bind)
    /proc/sys, on a filesystem that refuses writes."""
    if os.geteuid() == 0:
        return Path("/proc/sys")
    folder = tmp_path / "home"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_read_only_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _read_only_folder(tmp_path)
    monkeypatch.setenv("NIMFLOW_HOME", str(home))
    with pytest.raises(StorageError, match=r"^NIMFLOW_HOME: the database .* is not writable") as info:
        Store.open()
    assert str(home) in str(info.value) and "Point NIMFLOW_HOME at a folder you can write" in str(info.value)


def test_home_that_cannot_be_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NIMFLOW_HOME", str(blocker / "home"))
    with pytest.raises(StorageError, match=r"^NIMFLOW_HOME=.* cannot be created"):
        Store.open()


def test_unparsable_url_is_named_and_never_echoed_with_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("garbage", "postgresql+psycopg://user:s3cr3t-pw@host:notaport/db"):
        monkeypatch.setenv("NIMFLOW_DB_URL", url)
        with pytest.raises(StorageError, match="NIMFLOW_DB_URL") as info:
            Store.open()
        assert "s3cr3t-pw" not in str(info.value)


def test_unknown_dialect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMFLOW_DB_URL", "nosuchdb://user:s3cr3t-pw@host/db")
    with pytest.raises(StorageError, match=r"NIMFLOW_DB_URL=nosuchdb://user:\*\*\*@host/db") as info:
        Store.open()
    assert "s3cr3t-pw" not in str(info.value)


OPEN = (
    "from nimflow._exceptions import StorageError\n"
    "from nimflow._store import Store\n"
    "try:\n    Store.open()\nexcept StorageError as e:\n    print('StorageError:', e)\n"
)


def test_missing_driver_says_what_to_install(tmp_path: Path) -> None:
    # psycopg made unimportable in a child process: what a user without the extra sees.
    code = "import sys\nsys.modules['psycopg'] = None\n" + OPEN
    env = {**os.environ, "NIMFLOW_DB_URL": "postgresql+psycopg://me:s3cr3t-pw@127.0.0.1:1/db"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "StorageError: NIMFLOW_DB_URL=postgresql+psycopg://me:***@127.0.0.1:1/db" in result.stdout, (
        result.stderr
    )
    assert "pip install 'nimflow[postgres]'" in result.stdout
    assert "s3cr3t-pw" not in result.stdout + result.stderr


def test_database_locked_past_the_deadline(nimflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.open()
    store.close()
    monkeypatch.setattr("nimflow._engine.LOCK_TIMEOUT_SECONDS", 0.2)
    holder = sqlite3.connect(nimflow_home / "nimflow.db")
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        store = Store.open()
        with pytest.raises(StorageError, match=r"locked by another process.*NIMFLOW_DB_LOCK_TIMEOUT"):
            store.add(Run(id="r1", workflow="wf"))
        store.close()
    finally:
        holder.rollback()
        holder.close()


def test_postgresql_lock_held_past_the_deadline(
    postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.new_database()
    Store.open(url).close()
    monkeypatch.setattr("nimflow._engine.LOCK_TIMEOUT_SECONDS", 0.2)
    holder = create_engine(url)
    try:
        with holder.begin() as conn:
            conn.execute(text("LOCK TABLE run IN EXCLUSIVE MODE"))  # another process writing
            locked = pytest.raises(StorageError, match=r"locked by another process.*NIMFLOW_DB_LOCK_TIMEOUT")
            with Store.open(url) as store, locked:
                store.add(Run(id="r1", workflow="wf"))
    finally:
        holder.dispose()


def test_a_deadlock_is_not_explained_as_a_lock_held_past_the_deadline() -> None:
    class DeadlockDetected(Exception):
        sqlstate = "40P01"

    report = (
        "deadlock detected\nDETAIL: Process 1 waits for ShareLock on transaction 2; blocked by process 3."
    )
    exc = OperationalError("DELETE FROM claim", {}, DeadlockDetected(report))
    error = explain(exc, "postgresql+psycopg://me:pw@127.0.0.1/db")
    assert error is not None and "locked by another process" not in str(error)
    assert "deadlock detected" in str(error) and "pw" not in str(error)


def test_writer_failure_surfaces_as_storage_error(
    nimflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nimflow._engine.LOCK_TIMEOUT_SECONDS", 0.2)
    store = Store.open()
    holder = sqlite3.connect(nimflow_home / "nimflow.db", check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store.writer.insert(
            Run, {"id": "r1", "workflow": "wf", "inputs": "{}", "status": "running", "started_at": 0.0}
        )
        with pytest.raises(StorageError, match="locked"):
            store.flush()
    finally:
        holder.rollback()
        holder.close()
    store.close()


def test_masked_hides_only_the_password() -> None:
    assert masked("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert masked("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
