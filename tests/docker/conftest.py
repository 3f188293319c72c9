"""Fixtures for tests against a real Docker engine (marker `docker`).

The engine and the fake-server image come from tests/conftest.py (docker_client, fake_image). Every test gets its own NIMFLOW_HOME and actor name, and
its containers are removed by label when it ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def tiny_image(docker_client: Any, fake_image_module: Any) -> str:
    spec = importlib.util.spec_from_file_location("nimflow_test_tiny_image", _HERE / "tiny_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ref: str = module.ensure_image(docker_client, fake_image_module)
    return ref


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NIMFLOW_DB_URL", raising=False)
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "home"


def remove_actor_containers(client: Any, actor: str) -> None:
    for container in client.containers.list(all=True, filters={"label": [f"nimflow.actor={actor}"]}):
        with contextlib.suppress(Exception):
            container.remove(force=True)


@pytest.fixture()
def actor_name(docker_client: Any, home: Path) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    remove_actor_containers(docker_client, name)
    # The janitor of this home sees its replicas gone and exits; wait for it (bounded).
    from nimflow.actors import janitor

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and janitor.is_running():
        time.sleep(0.2)
