from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NIMFLOW_DB_URL", raising=False)
    for name in ("NGC_API_KEY", "HF_TOKEN", "NIMFLOW_DOCKER_NETWORK"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"
