"""Fixtures of the Batch file tests (helpers are in batch_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nimflow.testing import FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server
