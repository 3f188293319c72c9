"""Fixtures for the pipelines' tests (helpers live in pipeline_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
from pipeline_support import ArxivStub, load_pipeline


@pytest.fixture(scope="session")
def arxiv_summary() -> ModuleType:
    return load_pipeline("arxiv_summary")


@pytest.fixture(scope="session")
def ner() -> ModuleType:
    return load_pipeline("ner")


@pytest.fixture
def arxiv_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ArxivStub]:
    """The stub, with ARXIV_API_URL pointing the pipeline's arXiv client at it."""
    with ArxivStub() as stub:
        monkeypatch.setenv("ARXIV_API_URL", stub.api_url)
        yield stub
