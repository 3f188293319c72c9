"""A long Batch file, answered chunk by chunk: one server start for the whole batch with ttl 0,
stale temporary output files of killed runs removed, duplicate custom_ids found on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from batch_support import chat_line, cli_env, read_output, write_lines

from nimflow._exceptions import UserInputError
from nimflow.actors.launchers import launcher_for
from nimflow.actors.servers import LocalProcess
from nimflow.batch import run_batch, run_batch_file
from nimflow.testing import FakeServer


def test_ttl_0_starts_the_server_once_for_all_chunks_and_stops_it_at_the_end(tmp_path: Path) -> None:
    starts = tmp_path / "starts.txt"
    fake = f"{sys.executable} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model fake-model"
    server = LocalProcess(
        command=["sh", "-c", f"echo start >> {starts}; exec {fake}"], model="fake-model", startup_timeout=60
    )
    requests = [chat_line(f"r{i}", model="fake-model") for i in range(25)]
    out = run_batch(requests, server=server, ttl=0, chunk_size=10)  # three chunks, three runs
    assert [o["custom_id"] for o in out] == [f"r{i}" for i in range(25)]
    assert all(o["response"]["status_code"] == 200 for o in out)
    assert starts.read_text().splitlines() == ["start"]
    assert launcher_for("process").find("batch") == []  # stopped once the batch ended


_WRITER = """
import sys, time
from pathlib import Path
from nimflow.batch._format import AtomicWriter
writer = AtomicWriter(Path(sys.argv[1]))
writer.write('{"half": "written"}')
writer._file.flush()
print("ready", flush=True)
time.sleep(60)
"""


def _writer(path: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _end(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob(".out.jsonl.*.part"))


def test_a_rerun_removes_the_temporary_file_of_a_killed_run_not_of_a_live_one(
    tmp_path: Path, fake: FakeServer
) -> None:
    output = tmp_path / "out.jsonl"
    live = _writer(output)
    try:
        (live_part,) = _parts(tmp_path)
        killed = _writer(output)  # leaves the live writer's file alone
        _end(killed)
        assert len(_parts(tmp_path)) == 2
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"r{i}") for i in range(5)])
        run_batch_file(source, output, server=f"endpoint:{fake.base_url}", ttl=0)
        assert [o["custom_id"] for o in read_output(output)] == [f"r{i}" for i in range(5)]
        assert _parts(tmp_path) == [live_part]  # the live writer's file is its own
    finally:
        _end(live)
    run_batch_file(source, output, server=f"endpoint:{fake.base_url}", ttl=0)
    assert _parts(tmp_path) == []


def test_many_duplicate_custom_ids_are_named_and_counted_without_leftovers(
    tmp_path: Path, fake: FakeServer
) -> None:
    lines = [chat_line(f"r{i % 15}") for i in range(40)]  # r0..r14 each 2 or 3 times
    source = write_lines(tmp_path / "in.jsonl", lines)
    with pytest.raises(UserInputError) as caught:
        run_batch_file(source, tmp_path / "out.jsonl", server=f"endpoint:{fake.base_url}", ttl=0)
    text = str(caught.value)
    assert "custom_id 'r0' appears on lines 1, 16, 31" in text
    assert "custom_id 'r8' appears on lines 9, 24, 39" in text
    assert "custom_id 'r9'" not in text
    assert "6 more custom_id(s) appear on several lines" in text
    assert fake.requests == []  # nothing was sent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no index or output left
    assert not [p for p in Path(os.path.dirname(source)).glob(".nimflow-ids.*")]
