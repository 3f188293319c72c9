"""Autoscaled actors of fake-server processes: up on backlog, down when idle, from zero, failures."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import nimflow as nf
from nimflow._exceptions import UserInputError
from nimflow.actors.overrides import parse_actor_flags, replica_bounds_of

from .support import FAKE, MODEL, events, fake_server, make_workflow, replica_rows, running, served, wait_for


def test_a_burst_scales_up_to_max_and_back_to_min_after_scaledown() -> None:
    env = nf.ActorEnvironment(
        "burst", fake_server(), replica_count=(1, 4), max_concurrency=4, scaledown_seconds=1, ttl_seconds=60
    )
    result = nf.run(make_workflow(env), n=400)
    answers = result.outputs
    assert len(answers) == 400 and all(text.startswith("Item ") for text, _ in answers)
    # While the backlog lasted, requests were routed over 4 replicas, never more.
    assert max(n for _, n in answers) == 4
    ups = [e for e in events(result.run_id) if e.to_count > e.from_count]
    assert ups and max(e.to_count for e in ups) == 4 and all(e.to_count <= 4 for e in ups)
    assert all("backlog" in e.reason for e in ups)
    # Back to the minimum once idle (in the run or, after it, the janitor): replica 0 stays warm.
    # (A replica's process stops before its row is removed: wait for both.)
    settled = wait_for(lambda: running("burst") == [0] and len(replica_rows("burst")) == 1, 30)
    assert settled, (running("burst"), [r.replica for r in replica_rows("burst")])
    (row,) = replica_rows("burst")
    assert (row.replica, row.min_replicas, row.max_replicas, row.scaledown_seconds) == (0, 1, 4, 1.0)
    # The warm replica served only part of the burst: the others took the rest.
    assert 0 < served(row.base_url) < 400
    shown = subprocess.run(
        [sys.executable, "-m", "nimflow", "show", result.run_id], capture_output=True, text=True, timeout=60
    )
    assert "1 -> " in shown.stdout and "replicas: backlog of" in shown.stdout, shown.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "nimflow", "actors", "ls"], capture_output=True, text=True, timeout=60
    )
    assert "1/4" in listed.stdout, listed.stdout


def test_zero_minimum_with_a_fully_cached_map_starts_nothing() -> None:
    env = nf.ActorEnvironment("cold", fake_server(), replica_count=(0, 2), max_concurrency=4, ttl_seconds=0)
    wf = make_workflow(env)
    first = nf.run(wf, n=20)
    assert len(first.outputs) == 20
    assert running("cold") == [] and replica_rows("cold") == []  # ttl 0: stopped at the end
    again = nf.run(wf, n=20)
    assert again.outputs == first.outputs
    assert running("cold") == [] and replica_rows("cold") == [] and events(again.run_id) == []


def test_a_replica_that_fails_to_start_does_not_fail_the_run(tmp_path: Path) -> None:
    # The first start succeeds and leaves a mark; every later start of this command exits at once.
    mark = tmp_path / "started-once"
    command = f"sh -c {shlex.quote(f'if [ -e {mark} ]; then echo no room >&2; exit 3; fi; touch {mark}; exec {FAKE}')}"
    env = nf.ActorEnvironment(
        "flaky",
        fake_server(command),
        replica_count=(1, 3),
        max_concurrency=4,
        scaledown_seconds=1,
        ttl_seconds=0,
    )
    result = nf.run(make_workflow(env), n=120)
    assert len(result.outputs) == 120 and all(text.startswith("Item ") for text, _ in result.outputs)
    assert max(n for _, n in result.outputs) == 1  # the one replica served everything
    failed = [e for e in events(result.run_id) if "did not" in e.reason]
    assert failed, [e.reason for e in events(result.run_id)]
    assert running("flaky") == [] and replica_rows("flaky") == []


def test_replica_bounds_and_the_replicas_flag() -> None:
    assert nf.ActorEnvironment("a", fake_server(), replica_count=3).min_replicas == 3
    env = nf.ActorEnvironment("a", fake_server(), replica_count=(0, 2))
    assert (env.min_replicas, env.max_replicas, env.replica_count) == (0, 2, 2)
    assert "replica_count=(0, 2)" in repr(env)
    for bad in (0, (2, 1), (0, 0), (-1, 2), "2", (1, 2, 3), True):
        with pytest.raises(UserInputError, match="replica_count"):
            nf.ActorEnvironment("a", fake_server(), replica_count=bad)  # type: ignore[arg-type]
    flags = parse_actor_flags(replicas=["a=1:4", "b=2"])
    assert flags["a"].replicas == "1:4" and replica_bounds_of("1:4", "x") == (1, 4)
    assert replica_bounds_of("2", "x") == (2, 2)
    for bad_flag in ("a=x", "a=3:1", "a", "a=1:"):
        with pytest.raises(UserInputError, match="--replicas"):
            parse_actor_flags(replicas=[bad_flag])
    assert MODEL in FAKE
