"""Every test gets its own nimflow state folder, so tests never see each other's cache or runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def nimflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "nimflow-home"
    monkeypatch.setenv("NIMFLOW_HOME", str(home))
    monkeypatch.delenv("NIMFLOW_DB_URL", raising=False)
    yield home


# --------------------------------------------------------------------------------------------------
# The database: the storage-dependent tests take `store_url` and run once per store.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One PostgreSQL server for the session (skipped, with the reason, without the binaries)."""
    from store.pg import SKIP_REASON, PostgresServer, driver_missing, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    missing = driver_missing()
    if missing:
        pytest.skip(missing)
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, nimflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database URL of this test, set as NIMFLOW_DB_URL for it and the processes it starts:
    the default SQLite file in NIMFLOW_HOME, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        nimflow_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{nimflow_home / 'nimflow.db'}"
    url: str = request.getfixturevalue("postgres_server").new_database()
    monkeypatch.setenv("NIMFLOW_DB_URL", url)
    return url
