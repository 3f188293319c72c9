from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimflow.actors import janitor
from nimflow.actors.launchers.process import ProcessLauncher


@pytest.fixture(autouse=True)
def stop_everything(nimflow_home: Path) -> Iterator[None]:
    yield
    launcher = ProcessLauncher()
    for info in launcher.find():
        launcher.stop(info)
    deadline = time.monotonic() + 15  # the janitor exits once nothing is left
    while time.monotonic() < deadline and janitor.is_running():
        time.sleep(0.1)
