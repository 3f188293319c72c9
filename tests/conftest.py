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


STORES = ["sqlite", "postgresql"]

# Tests that go through the store without naming it (engine, cache, the CLI's reads) and also run
# on PostgreSQL, through `each_store`: whole modules, or single tests (the others of such a module
# read the SQLite file itself). Paths are relative to tests/.
PER_STORE = {
    "core/test_cache.py",
    "core/test_map.py",
    "core/test_runner.py::test_retries_are_attempted_and_recorded",
    "core/test_runner.py::test_a_failing_task_keeps_finished_siblings_cached_and_skips_downstream",
    "core/test_runner.py::test_a_large_sync_and_async_map_records_every_item",
    "cli/test_history.py",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames:
        return  # parametrized by store_url itself
    module = Path(metafunc.definition.path).relative_to(Path(__file__).parent).as_posix()
    if module in PER_STORE or f"{module}::{metafunc.definition.originalname}" in PER_STORE:
        metafunc.parametrize("each_store", STORES, indirect=True)


@pytest.fixture(autouse=True)
def each_store(request: pytest.FixtureRequest, nimflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store of a test in PER_STORE (SQLite for the others): on PostgreSQL, a fresh database
    set as NIMFLOW_DB_URL before the test's own fixtures open the store."""
    store = getattr(request, "param", "sqlite")
    if store == "postgresql":
        monkeypatch.setenv("NIMFLOW_DB_URL", request.getfixturevalue("postgres_server").new_database())
    return str(store)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, nimflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database URL of this test, set as NIMFLOW_DB_URL for it and the processes it starts:
    the default SQLite file in NIMFLOW_HOME, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        nimflow_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{nimflow_home / 'nimflow.db'}"
    url: str = request.getfixturevalue("postgres_server").new_database()
    monkeypatch.setenv("NIMFLOW_DB_URL", url)
    return url
