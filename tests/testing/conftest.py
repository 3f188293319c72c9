"""Fixtures for the fake server's own tests: the plugin's fixtures and a raw HTTP helper."""

from __future__ import annotations

import pytest
from raw_http import RawHTTP

from nimflow.testing import plugin


def pytest_configure(config: pytest.Config) -> None:
    # The plugin is an entry point once nimflow is installed; load it by hand otherwise.
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "nimflow-testing-plugin")


@pytest.fixture
def raw_http() -> RawHTTP:
    return RawHTTP()
