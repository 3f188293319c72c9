"""Every test gets its own nimflow state folder, so tests never see each other's cache or runs."""

from __future__ import annotations

import importlib.util
import os
import time
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


# --------------------------------------------------------------------------------------------------
# A real Docker engine and the fake-server image, for every test that starts containers.


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The engine's client. No engine answering: the test is skipped with the reason, except under
    CI (CI set), where it fails, because CI must run the container tests."""
    from nimflow._exceptions import DockerUnavailableError
    from nimflow.actors.launchers.docker import DockerLauncher

    # The launcher's own check: it probes the socket first and closes what it opened, so a
    # machine without an engine skips these tests and leaks no socket.
    try:
        client = DockerLauncher().client()
    except DockerUnavailableError as exc:
        reason = str(exc)
        if os.environ.get("CI"):
            pytest.fail("CI must run the docker tests: " + reason)
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_image_module() -> Any:
    """tests/docker/fake_image.py, which builds the fake server's image (no registry here)."""
    path = Path(__file__).parent / "docker" / "fake_image.py"
    spec = importlib.util.spec_from_file_location("nimflow_test_fake_image", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake_image(docker_client: Any, fake_image_module: Any) -> str:
    started = time.monotonic()
    ref: str = fake_image_module.ensure_image(docker_client)
    print(f"fake-server image {ref} ready in {time.monotonic() - started:.1f}s")
    return ref
