"""Schedule arithmetic (fixed rate and cron) and launch-plan declarations, without a scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import nimflow as nf
from nimflow._launchplans import claim, register, states
from nimflow._store import Store

Numbers = nf.Artifact("Numbers")


@nf.task
def echo(x: int) -> int:
    return x


@nf.workflow
def wf(x: int = Numbers.query()) -> int:
    return echo(x=x)


@nf.workflow
def plain(x: int = 1) -> int:
    return echo(x=x)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_fixed_rate_counts_from_the_planned_times() -> None:
    rate = nf.FixedRate(timedelta(seconds=10))
    assert rate.latest_due(100.0, None, 100.0) == 100.0  # the first tick is the anchor
    assert rate.latest_due(100.0, 100.0, 105.0) is None
    assert rate.latest_due(100.0, 100.0, 112.5) == 110.0  # a late check still plans 110, not 112.5
    # Missed ticks (120, 130, 140) fire once: the newest.
    assert rate.latest_due(100.0, 110.0, 147.0) == 140.0
    assert rate.next_after(100.0, 140.0) == 150.0


def test_cron_fires_the_newest_missed_time_once() -> None:
    cron = nf.Cron("*/5 * * * *")
    anchor = ts("2026-01-01T10:01:00")
    assert cron.next_after(anchor, None) == ts("2026-01-01T10:05:00")
    assert cron.latest_due(anchor, None, ts("2026-01-01T10:04:59")) is None
    assert cron.latest_due(anchor, None, ts("2026-01-01T10:05:01")) == ts("2026-01-01T10:05:00")
    last = ts("2026-01-01T10:05:00")
    assert cron.latest_due(anchor, last, ts("2026-01-01T10:23:00")) == ts("2026-01-01T10:20:00")


def test_bad_declarations_say_what_to_do() -> None:
    with pytest.raises(nf.WorkflowDefinitionError, match="not a cron expression"):
        nf.Cron("every five minutes")
    with pytest.raises(nf.WorkflowDefinitionError, match="longer than zero"):
        nf.FixedRate(timedelta(0))
    with pytest.raises(nf.WorkflowDefinitionError, match="either schedule"):
        nf.LaunchPlan(plain, "none")
    with pytest.raises(nf.WorkflowDefinitionError, match="no input \\['y'\\]"):
        nf.LaunchPlan(plain, "p", inputs={"y": 1}, schedule=nf.FixedRate(timedelta(seconds=1)))
    with pytest.raises(nf.WorkflowDefinitionError, match=r"no input of .* takes it"):
        nf.LaunchPlan(plain, "p", trigger=nf.OnArtifact(Numbers))


def test_a_trigger_binds_the_version_to_the_inputs_that_read_the_artifact() -> None:
    plan = nf.LaunchPlan(wf, "on-numbers", trigger=nf.OnArtifact(Numbers))
    assert plan.trigger_inputs() == ["x"]
    assert plan.inputs_for(3) == {"x": Numbers.query(version=3)}


def test_a_claim_is_taken_once(nimflow_home: Path) -> None:
    store = Store.open()
    try:
        plan = nf.LaunchPlan(plain, "p", schedule=nf.FixedRate(timedelta(seconds=1)))
        first_seen = register(store, plan, None).first_seen
        assert register(store, plan, None).first_seen == first_seen  # registered once
        assert claim(store, "p", "tick:1.000", planned_at=1.0) is not None
        assert claim(store, "p", "tick:1.000", planned_at=1.0) is None
        assert claim(store, "other", "tick:1.000", planned_at=1.0) is not None
        assert states(store)["p"].active
    finally:
        store.close()
