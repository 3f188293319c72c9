"""The fixed-rate loop behind `nimflow run --every`."""

from __future__ import annotations

import pytest

from nimflow._every import CANCELLED, run_every
from nimflow._exceptions import UserInputError


def test_a_failed_run_does_not_stop_the_loop_and_ctrl_c_in_a_run_does() -> None:
    codes = iter([1, 0, CANCELLED, 0])
    calls: list[int] = []
    waits: list[float] = []

    def once() -> int:
        calls.append(1)
        return next(codes)

    assert run_every(0.01, once, waits.append) == CANCELLED
    assert len(calls) == 3 and len(waits) == 2 and all(0 <= w <= 0.01 for w in waits)


def test_ctrl_c_while_waiting_ends_the_loop_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def interrupted_sleep(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupted_sleep)
    assert run_every(5, lambda: 0, lambda _wait: None) == 0


def test_the_rate_must_be_positive() -> None:
    with pytest.raises(UserInputError, match="--every 0: give the seconds between run starts"):
        run_every(0, lambda: 0, lambda _wait: None)
