"""The writer thread gets the GIL promptly while it lives, and the interpreter is left as it was."""

from __future__ import annotations

import sys

from nimflow._store import Store


def test_a_store_writer_lowers_the_switch_interval_until_the_last_one_closes(store_url: str) -> None:
    before = sys.getswitchinterval()
    first, second = Store.open(store_url), Store.open(store_url)
    try:
        first.writer.flush()
        assert sys.getswitchinterval() <= 0.001 < before
        second.writer.flush()
        first.close()
        assert sys.getswitchinterval() <= 0.001  # the second writer still runs
    finally:
        first.close()
        second.close()
    assert sys.getswitchinterval() == before
