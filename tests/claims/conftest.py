"""The fake server every cooperation test counts answers on, in its own process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nimflow.testing import FakeServerProcess, spawn


@pytest.fixture
def fake() -> Iterator[FakeServerProcess]:
    server = spawn(model="base", latency_ms=5, log_limit=20_000)
    yield server
    server.stop()
