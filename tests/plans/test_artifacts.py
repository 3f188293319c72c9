"""Artifacts in process: versions per successful run, queries as input defaults, pinned versions,
lineage, tuple outputs, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
from plan_support import cli, plan_file, query

import nimflow as nf
from nimflow._artifacts import ArtifactQuery

Numbers = nf.Artifact("Numbers")
Words = nf.Artifact("Words", partitions={"lang": "en"})


@nf.task
def number(n: int, fail: bool = False) -> int:
    if fail:
        raise ValueError("asked to fail")
    return n


@nf.workflow
def produce(n: int = 1, fail: bool = False) -> Annotated[int, Numbers]:
    return number(n=n, fail=fail)


@nf.task
def pair(n: int) -> tuple[int, list[str]]:
    return n, ["w"] * n


@nf.workflow
def produce_both(n: int = 2) -> tuple[Annotated[int, Numbers], Annotated[list[str], Words]]:
    return pair(n=n)


@nf.task
def double(x: int) -> int:
    return 2 * x


@nf.workflow
def consume(x: int = Numbers.query()) -> int:
    return double(x=x)


def test_each_successful_run_adds_a_version_and_a_query_reads_the_latest(nimflow_home: Path) -> None:
    first = nf.run(produce, n=3)
    second = nf.run(produce, n=4)
    with pytest.raises(nf.RunFailedError):
        nf.run(produce, n=5, fail=True)
    assert query(nimflow_home, "select id, value, run_id from artifact_version order by version") == [
        ("Numbers:1", "3", first.run_id),
        ("Numbers:2", "4", second.run_id),
    ]
    latest = nf.run(consume)
    assert latest.outputs == 8
    pinned = nf.run(consume, x=Numbers.query(version=1))
    assert pinned.outputs == 6
    given = nf.run(consume, x=10)  # a plain value still works
    assert given.outputs == 20
    assert query(nimflow_home, "select run_id, input, artifact_id from artifact_use order by created_at") == [
        (latest.run_id, "x", "Numbers:2"),
        (pinned.run_id, "x", "Numbers:1"),
    ]
    # The run row holds the value read, as any input.
    assert json.loads(query(nimflow_home, "select inputs from run where id = ?", pinned.run_id)[0][0]) == {"x": 3}


def test_tuple_outputs_each_make_their_artifact_with_its_partitions(nimflow_home: Path) -> None:
    nf.run(produce_both, n=2)
    rows = query(nimflow_home, "select id, value, partitions from artifact_version order by id")
    assert rows == [("Numbers:1", "2", "{}"), ("Words:1", '["w","w"]', '{"lang": "en"}')]


def test_no_version_yet_is_one_clear_error(nimflow_home: Path) -> None:
    with pytest.raises(nf.UserInputError, match=r"artifact Numbers has no version yet\. Run the workflow"):
        nf.run(consume)
    nf.run(produce, n=1)
    with pytest.raises(nf.UserInputError, match="artifact Numbers has no version 7"):
        nf.run(consume, x=Numbers.query(version=7))
    assert query(nimflow_home, "select count(*) from run where workflow like '%consume'") == [(0,)]


@pytest.mark.parametrize("text", ["@artifact:", "@artifact:Numbers:one", "@artifact::3"])
def test_bad_references(text: str) -> None:
    with pytest.raises(nf.UserInputError, match="@artifact:NAME:VERSION"):
        ArtifactQuery.parse(text)


def test_artifact_names() -> None:
    for bad in ("", "a:b", "@x"):
        with pytest.raises(nf.WorkflowDefinitionError):
            nf.Artifact(bad)


def test_the_command_line_picks_a_version(tmp_path: Path, nimflow_home: Path) -> None:
    file = plan_file(tmp_path, "numbers", "")
    for n in (3, 4):
        assert cli(nimflow_home, "run", str(file), "produce", "--n", str(n)).returncode == 0
    latest = cli(nimflow_home, "run", str(file), "consume")
    assert latest.returncode == 0, latest.stderr
    pinned = cli(nimflow_home, "run", str(file), "consume", "--x", "@artifact:Numbers:1")
    assert pinned.returncode == 0, pinned.stderr
    outputs = query(nimflow_home, "select outputs from run where workflow = 'numbers.consume' order by started_at")
    assert outputs == [("8",), ("6",)]
    missing = cli(nimflow_home, "run", str(file), "consume", "--x", "@artifact:Numbers:9")
    assert missing.returncode == 2 and "artifact Numbers has no version 9" in missing.stderr  # bad input
    shown = cli(nimflow_home, "artifacts", "show", "Numbers:1")
    assert shown.returncode == 0 and "consumer: run" in shown.stdout, shown.stdout
    assert cli(nimflow_home, "artifacts", "show", "Nothing").returncode == 1
