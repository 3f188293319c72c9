"""Every test gets its own nimflow state folder, so tests never see each other's cache or runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def nimflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "nimflow-home"
    monkeypatch.setenv("NIMFLOW_HOME", str(home))
    monkeypatch.delenv("NIMFLOW_DB_URL", raising=False)
    yield home
