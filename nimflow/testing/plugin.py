"""pytest plugin (entry point ``pytest11``): fixtures that serve the fake OpenAI server.

- ``fake_openai``: a started FakeServer shared by the session; per test its log is cleared and
  its faults removed. Point your client at ``fake_openai.base_url``.
- ``fake_openai_factory``: ``fake_openai_factory(latency_ms=50, faults="seq:429,ok", ...)``
  starts a FakeServer with those knobs, stopped at the end of the test.

Loaded in every pytest run where nimflow is installed, so it imports nothing heavy up front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._server import FakeServer


@pytest.fixture(scope="session")
def fake_openai_session() -> Iterator[FakeServer]:
    """One fake server for the whole session (use ``fake_openai``, which resets it per test)."""
    from ._server import FakeServer

    with FakeServer() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_session: FakeServer) -> Iterator[FakeServer]:
    """A started fake OpenAI server with an empty log and no faults."""
    fake_openai_session.clear_log()
    fake_openai_session.set_faults(None)
    yield fake_openai_session
    fake_openai_session.set_faults(None)


@pytest.fixture
def fake_openai_factory() -> Iterator[Callable[..., FakeServer]]:
    """Start fake servers with any FakeServer options; each is stopped after the test."""
    from ._server import FakeServer

    started: list[FakeServer] = []

    def make(*args: Any, **options: Any) -> FakeServer:
        server = FakeServer(*args, **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
