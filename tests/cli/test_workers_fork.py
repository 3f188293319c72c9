"""How `--workers` starts its processes: `nimflow run` forks copies of itself, which have the
workflow loaded already; `nf.arun` (on the caller's event loop) spawns fresh interpreters. Either
way every item is computed once, by both processes, in one run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from .support import nimflow

PIPELINE = textwrap.dedent(
    """
    import os
    import time

    import nimflow as nf

    with open(os.environ["IMPORT_LOG"], "a") as f:  # one line per interpreter that loads this file
        f.write(f"{os.getpid()}\\n")

    @nf.task
    def items(n: int) -> list[int]:
        if n < 0:
            raise ValueError("n must not be negative")
        return list(range(n))

    @nf.task(cache=True)
    def slow(i: int) -> int:
        time.sleep(0.2)
        return i

    @nf.workflow
    def wf(n: int) -> int:
        return sum_of(values=nf.map_task(slow)(i=items(n=n)))

    @nf.task
    def sum_of(values: list[int]) -> int:
        return sum(values)
    """
)


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    env = {"NIMFLOW_HOME": str(tmp_path / "home"), "IMPORT_LOG": str(tmp_path / "imports.txt")}
    return tmp_path / "pipeline.py", env


def _computed_by(home: Path) -> dict[int, int]:
    with sqlite3.connect(home / "nimflow.db") as db:
        rows = db.execute("SELECT pid, COUNT(*) FROM taskrun WHERE item IS NOT NULL GROUP BY pid").fetchall()
    return dict(rows)


def test_nimflow_run_forks_its_workers_with_the_workflow_loaded(tmp_path: Path) -> None:
    file, env = _setup(tmp_path)
    out = nimflow("run", str(file), "--n", "40", "--workers", "2", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "40 map items, 0 cache hits" in out.stdout
    assert len((tmp_path / "imports.txt").read_text().splitlines()) == 1  # the worker did not load it again
    by_pid = _computed_by(tmp_path / "home")
    assert sum(by_pid.values()) == 40 and len(by_pid) == 2, by_pid


def test_a_run_that_fails_before_its_workers_begin_ends_them(tmp_path: Path) -> None:
    file, env = _setup(tmp_path)
    out = nimflow("run", str(file), "--n", "-1", "--workers", "2", cwd=tmp_path, env=env)
    # The forked worker waited for a run to work for; the run failed first and ended it (else
    # `nimflow run`, which waits for its workers, would not have returned within the timeout).
    assert out.returncode == 1 and "n must not be negative" in out.stdout + out.stderr
    assert "worker pid" not in out.stderr  # it ended cleanly


def test_arun_on_the_callers_event_loop_spawns_its_workers(tmp_path: Path) -> None:
    file, env = _setup(tmp_path)
    script = textwrap.dedent(
        f"""
        import anyio
        import nimflow as nf
        from nimflow._loader import pick_workflow

        async def main():
            wf = pick_workflow({str(file)!r}, None)
            result = await nf.arun(wf, n=40, workers=2, source_file={str(file)!r})
            print(result.outputs)

        anyio.run(main)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(sum(range(40)))
    assert len((tmp_path / "imports.txt").read_text().splitlines()) == 2  # the spawned worker loaded it
    assert len(_computed_by(tmp_path / "home")) == 2

