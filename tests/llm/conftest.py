from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from scripted import echo_server

from nimflow.testing import FakeServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@pytest.fixture
def mini() -> Iterator[FakeServer]:
    server = echo_server()
    yield server
    server.stop()


@pytest.fixture
def mini2() -> Iterator[FakeServer]:
    server = echo_server()
    yield server
    server.stop()


@pytest.fixture
def closed_url() -> str:
    """A 127.0.0.1 base URL nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
