"""ner.py's launch plans end to end: `nimflow serve pipelines/ner.py` against the fake server
publishes a TextSample, which triggers ner_wf once; the entities land in the table with lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from pipeline_support import ROOT, nimflow_cli, query

GEMMA = "google/gemma-7b-it"


def test_the_plans_are_declared(ner: ModuleType) -> None:
    assert ner.upstream_plan.schedule.every.total_seconds() == 60
    assert ner.ner_plan.trigger.artifact.name == "TextSample"
    assert ner.ner_plan.trigger_inputs() == ["sample"]


@pytest.mark.timeout(180)
def test_serve_runs_upstream_then_ner_once(nimflow_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "nimflow", "serve", "pipelines/ner.py", "--server", "vllm-actor=fake"],
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while not query_done(nimflow_home):
                assert serve.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            serve.send_signal(signal.SIGTERM)
            code = serve.wait(60)
    output = log.read_text()
    assert code == 0, output

    launches = dict(query(nimflow_home, "select plan, status from launch"))
    assert launches == {"text-sample-every-minute": "succeeded", "ner-on-text-sample": "succeeded"}
    ((sample_json, producer),) = query(nimflow_home, "select value, run_id from artifact_version")
    sample = json.loads(sample_json)
    ((ner_run,),) = query(nimflow_home, "select run_id from artifact_use where artifact_id = 'TextSample:1'")
    rows = query(nimflow_home, "select text_id, text, model, run_id from entities")
    assert rows == [(sample["id"], sample["text"], GEMMA, ner_run)]
    assert query(nimflow_home, "select workflow from run where id = ?", producer) == [
        ("text_samples.upstream_wf",)
    ]

    # The same version by hand, from the command line: nothing new in the table, lineage recorded.
    done = nimflow_cli(
        "run", "pipelines/ner.py", "--sample", "@artifact:TextSample:1", "--server", "vllm-actor=fake"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(nimflow_home, "select count(*) from entities") == [(1,)]
    shown = nimflow_cli("artifacts", "show", "TextSample", "--json")
    info = json.loads(shown.stdout)
    assert info["producer"]["run"] == producer
    assert len(info["consumers"]) == 2 and info["consumers"][0]["run"] == ner_run


def query_done(home: Path) -> bool:
    return bool(
        query_safe(home, "select 1 from launch where plan = 'ner-on-text-sample' and status = 'succeeded'")
    )


def query_safe(home: Path, sql: str) -> list[tuple[object, ...]]:
    if not (home / "nimflow.db").exists():
        return []
    try:
        return query(home, sql)
    except Exception:  # the table does not exist yet
        return []
