"""`nimflow serve` in real subprocesses: schedules on their grid, restarts, artifact triggers
exactly once (also with two schedulers on one database), lineage, activation, failures, stop.

Every wait is bounded; the only timing assertions are generous tolerances on the planned grid.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from plan_support import Serve, cli, finished, launches, plan_file, query, wait_for

pytestmark = pytest.mark.timeout(240)

PERIOD = 1.5  # seconds between planned starts
TOLERANCE = 2.0  # how late a start may be on a machine shared with other work


def test_fixed_rate_starts_on_the_planned_grid(tmp_path: Path, nimflow_home: Path) -> None:
    file = plan_file(
        tmp_path,
        "ticks",
        f'ticks = nf.LaunchPlan(produce, "ticks", schedule=nf.FixedRate(timedelta(seconds={PERIOD})))',
    )
    serve = Serve(nimflow_home, str(file), log=tmp_path / "serve.log")
    try:
        wait_for(lambda: len(finished(nimflow_home, "ticks")) >= 4, 60, lambda: serve.output)
    finally:
        assert serve.stop() == 0, serve.output
    rows = finished(nimflow_home, "ticks")
    planned = [row[1] for row in rows]
    first = planned[0]
    # On the grid: every planned time is the first plus a whole number of periods, none skipped.
    assert [round((p - first) / PERIOD, 6) for p in planned] == list(range(len(planned)))
    assert all(row[2] == "succeeded" for row in rows), rows
    # Each run started within the tolerance of its planned time.
    for _key, planned_at, _status, run_id, _claimed in rows:
        ((started,),) = query(nimflow_home, "select started_at from run where id = ?", run_id)
        assert 0 <= started - planned_at < TOLERANCE
    # Each launch is logged.
    assert serve.output.count("launch ticks tick") >= 2 * len(rows)
    assert "scheduler stopped" in serve.output


def test_a_killed_scheduler_fires_one_missed_tick_on_restart(tmp_path: Path, nimflow_home: Path) -> None:
    file = plan_file(
        tmp_path,
        "ticks",
        f'ticks = nf.LaunchPlan(produce, "ticks", schedule=nf.FixedRate(timedelta(seconds={PERIOD})))',
    )
    serve = Serve(nimflow_home, str(file), log=tmp_path / "serve1.log")
    try:
        wait_for(lambda: len(finished(nimflow_home, "ticks")) >= 2, 60, lambda: serve.output)
    finally:
        serve.stop(signal.SIGKILL)
    before = launches(nimflow_home, "ticks")
    last_before = max(row[1] for row in before)
    time.sleep(4 * PERIOD)  # three or four ticks pass with no scheduler
    restarted_at = time.time()
    again = Serve(nimflow_home, str(file), log=tmp_path / "serve2.log")
    try:
        wait_for(lambda: len(launches(nimflow_home, "ticks")) >= len(before) + 3, 60, lambda: again.output)
    finally:
        assert again.stop() == 0, again.output
    after = launches(nimflow_home, "ticks")
    new = [row for row in after if row[1] > last_before]
    planned = [row[1] for row in new]
    steps = [round((b - a) / PERIOD, 6) for a, b in zip([last_before, *planned], planned, strict=False)]
    # At least four ticks passed with no scheduler (the sleep, plus the restart's own start-up):
    # the restarted scheduler fired one launch for them, the newest, then went on tick by tick.
    assert steps[0] >= 4 and steps[0] == int(steps[0]), steps
    assert steps[1:] == [1.0] * (len(steps) - 1), steps
    caught_up = new[0]
    assert 0 <= caught_up[4] - caught_up[1] < PERIOD + 0.5  # the newest missed tick, not an old one
    assert restarted_at < caught_up[4]
    assert len({row[0] for row in after}) == len(after)
    assert "were missed: started once" in again.output


TRIGGERED = 'on_numbers = nf.LaunchPlan(consume, "on-numbers", trigger=nf.OnArtifact(Numbers))'


def produce_version(home: Path, file: Path, n: int) -> str:
    done = cli(home, "run", str(file), "produce", "--n", str(n))
    assert done.returncode == 0, done.stdout + done.stderr
    ((run_id,),) = query(
        home,
        "select run_id from artifact_version where version = (select max(version) from artifact_version)",
    )
    return str(run_id)


def test_an_artifact_triggers_its_plan_once_across_restarts_and_two_schedulers(
    tmp_path: Path, nimflow_home: Path
) -> None:
    file = plan_file(tmp_path, "triggered", TRIGGERED)
    # The database is made first: two processes creating a new SQLite database's tables at the
    # same moment is the store's concern, not this test's.
    assert cli(nimflow_home, "launchplans", "ls", str(file)).returncode == 0
    first = Serve(nimflow_home, str(file), log=tmp_path / "a.log")
    second = Serve(nimflow_home, str(file), log=tmp_path / "b.log")
    try:
        first.wait_serving()
        second.wait_serving()
        producers = [produce_version(nimflow_home, file, n) for n in (3, 4)]
        wait_for(
            lambda: len(finished(nimflow_home, "on-numbers")) >= 2, 60, lambda: first.output + second.output
        )
        time.sleep(1.5)  # both schedulers poll several more times: nothing more may start
    finally:
        codes = first.stop(), second.stop()
        assert codes == (0, 0), first.output + second.output
    # While no scheduler runs, a third version appears; a restarted scheduler takes it, only it.
    producers.append(produce_version(nimflow_home, file, 5))
    again = Serve(nimflow_home, str(file), log=tmp_path / "c.log")
    try:
        wait_for(lambda: len(finished(nimflow_home, "on-numbers")) >= 3, 60, lambda: again.output)
        time.sleep(1.5)
    finally:
        assert again.stop() == 0, again.output

    rows = launches(nimflow_home, "on-numbers")
    assert sorted(row[0] for row in rows) == [
        "artifact:Numbers:1",
        "artifact:Numbers:2",
        "artifact:Numbers:3",
    ]
    assert all(row[2] == "succeeded" for row in rows), rows
    # Each version was read by exactly one run, and that run doubled the version's value.
    uses = query(nimflow_home, "select artifact_id, run_id from artifact_use order by artifact_id")
    assert [u[0] for u in uses] == ["Numbers:1", "Numbers:2", "Numbers:3"]
    outputs = {
        a: json.loads(query(nimflow_home, "select outputs from run where id = ?", r)[0][0]) for a, r in uses
    }
    assert outputs == {"Numbers:1": 6, "Numbers:2": 8, "Numbers:3": 10}

    # Lineage from the command line: producer and consumer of a version.
    shown = cli(nimflow_home, "artifacts", "show", "Numbers:2", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["producer"]["run"] == producers[1] and info["producer"]["workflow"].endswith("produce")
    assert [c["run"] for c in info["consumers"]] == [uses[1][1]]
    assert info["value"] == 4
    listed = cli(nimflow_home, "artifacts", "ls", "Numbers")
    assert listed.returncode == 0 and all(run in listed.stdout for run in producers), listed.stdout


def test_versions_from_before_the_plan_existed_do_not_fire(tmp_path: Path, nimflow_home: Path) -> None:
    file = plan_file(tmp_path, "triggered", TRIGGERED)
    produce_version(nimflow_home, file, 1)
    serve = Serve(nimflow_home, str(file), log=tmp_path / "serve.log")
    try:
        serve.wait_serving()
        time.sleep(1.5)
        assert launches(nimflow_home, "on-numbers") == []
        produce_version(nimflow_home, file, 2)
        wait_for(lambda: finished(nimflow_home, "on-numbers"), 60, lambda: serve.output)
    finally:
        assert serve.stop() == 0, serve.output
    assert [row[0] for row in launches(nimflow_home, "on-numbers")] == ["artifact:Numbers:2"]


def test_a_deactivated_plan_does_not_fire_and_serve_follows_the_state_live(
    tmp_path: Path, nimflow_home: Path
) -> None:
    file = plan_file(
        tmp_path,
        "ticks",
        f'ticks = nf.LaunchPlan(produce, "ticks", schedule=nf.FixedRate(timedelta(seconds={PERIOD})))',
    )
    listed = cli(nimflow_home, "launchplans", "ls", str(file))  # registers the plan
    assert listed.returncode == 0 and "every 1.5 s" in listed.stdout, listed.stdout + listed.stderr
    assert cli(nimflow_home, "launchplans", "deactivate", "ticks").returncode == 0
    serve = Serve(nimflow_home, str(file), log=tmp_path / "serve.log")
    try:
        serve.wait_serving()
        time.sleep(3 * PERIOD)
        assert launches(nimflow_home, "ticks") == []
        assert cli(nimflow_home, "launchplans", "activate", "ticks").returncode == 0
        wait_for(lambda: len(finished(nimflow_home, "ticks")) >= 1, 60, lambda: serve.output)
        assert cli(nimflow_home, "launchplans", "deactivate", "ticks").returncode == 0
        count = len(launches(nimflow_home, "ticks"))
        time.sleep(3 * PERIOD)
        assert len(launches(nimflow_home, "ticks")) == count
    finally:
        assert serve.stop() == 0, serve.output
    shown = cli(nimflow_home, "launchplans", "ls")
    assert "ticks" in shown.stdout and "(inactive)" in shown.stdout, shown.stdout
    unknown = cli(nimflow_home, "launchplans", "activate", "nope")
    assert unknown.returncode == 1 and "no launch plan 'nope'" in unknown.stderr


def test_a_failing_upstream_run_triggers_nothing_and_the_scheduler_goes_on(
    tmp_path: Path, nimflow_home: Path
) -> None:
    file = plan_file(
        tmp_path,
        "failing",
        f'failing = nf.LaunchPlan(produce, "failing", inputs={{"fail": True}}, '
        f"schedule=nf.FixedRate(timedelta(seconds={PERIOD})))\n" + TRIGGERED,
    )
    serve = Serve(nimflow_home, str(file), log=tmp_path / "serve.log")
    try:
        wait_for(lambda: len(finished(nimflow_home, "failing")) >= 3, 60, lambda: serve.output)
        assert serve.alive()
        time.sleep(1.0)
        assert launches(nimflow_home, "on-numbers") == []
        assert query(nimflow_home, "select count(*) from artifact_version") == [(0,)]
    finally:
        assert serve.stop() == 0, serve.output
    rows = finished(nimflow_home, "failing")
    assert all(row[2] == "failed" for row in rows), rows
    statuses = {query(nimflow_home, "select status from run where id = ?", row[3])[0][0] for row in rows}
    assert statuses == {"failed"}
    assert "asked to fail" in serve.output


def test_sigterm_cancels_the_run_in_progress_and_records_it(tmp_path: Path, nimflow_home: Path) -> None:
    file = plan_file(
        tmp_path, "slow", 'slow_plan = nf.LaunchPlan(slow, "slow", schedule=nf.FixedRate(timedelta(hours=1)))'
    )
    serve = Serve(nimflow_home, str(file), log=tmp_path / "serve.log")
    try:
        done_items = "select count(*) from taskrun where status = 'succeeded' and item is not null"
        wait_for(lambda: query(nimflow_home, done_items) not in ([], [(0,)]), 60, lambda: serve.output)
    finally:
        assert serve.stop(signal.SIGTERM) == 0, serve.output
    ((_key, _planned, status, run_id, _claimed),) = launches(nimflow_home, "slow")
    assert status == "cancelled"
    assert query(nimflow_home, "select status from run where id = ?", run_id) == [("cancelled",)]
    done = query(
        nimflow_home,
        "select count(*) from taskrun where run_id = ? and status = 'succeeded' and item is not null",
        run_id,
    )
    assert 0 < done[0][0] < 40  # finished items are kept; the rest did not run
    assert "SIGTERM: stopping" in serve.output
