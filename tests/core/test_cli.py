"""The command line, run as users run it: `python -m nimflow ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PIPELINE = textwrap.dedent(
    '''
    import functools
    import nimflow as nf

    @nf.task(cache=True, cache_version="1")
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @nf.task(cache=True)
    def power(x: int, exponent: int) -> int:
        if x == 13:
            raise ValueError("unlucky 13")
        return x ** exponent

    @nf.workflow
    def squares(n: int = 5, exponent: int = 2, shout: bool = False, tags: list[str] = []) -> list[int | None]:
        """Powers of the first n numbers."""
        xs = numbers(n=n)
        return nf.map_task(functools.partial(power, exponent=exponent), min_success_ratio=0.9)(x=xs)
    '''
)


def nimflow(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NIMFLOW_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "nimflow", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "powers.py"
    path.write_text(PIPELINE)
    return path


def test_run_show_outputs_and_cache(pipeline: Path, nimflow_home: Path) -> None:
    cwd = pipeline.parent
    first = nimflow("run", str(pipeline), "--n", "20", "--exponent", "3", cwd=cwd, home=nimflow_home)
    assert first.returncode == 0, first.stderr
    assert "succeeded" in first.stdout and "1 failure," in first.stdout
    assert "map_power[13]: ValueError: unlucky 13" in first.stderr
    run_id = first.stdout.split("run ", 1)[1].split()[0]

    outputs = nimflow("outputs", run_id, "--json", cwd=cwd, home=nimflow_home)
    values = json.loads(outputs.stdout)
    assert values[:4] == [0, 1, 8, 27] and values[13] is None and values[19] == 19**3

    shown = nimflow("show", run_id[:6], cwd=cwd, home=nimflow_home)
    assert shown.returncode == 0, shown.stderr
    assert "powers.numbers" in shown.stdout and "20 items, 0 cached, 1 failed" in shown.stdout
    assert "item 13: ValueError: unlucky 13" in shown.stdout

    again = nimflow("run", str(pipeline), "--n", "20", "--exponent=3", cwd=cwd, home=nimflow_home)
    assert again.returncode == 0 and "20 cache hits" in again.stdout  # 19 items + numbers

    listed = nimflow("runs", cwd=cwd, home=nimflow_home)
    assert run_id in listed.stdout and listed.stdout.count("succeeded") == 2

    cache = nimflow("cache", "ls", cwd=cwd, home=nimflow_home)
    assert "powers.power" in cache.stdout and "19" in cache.stdout
    cleared = nimflow("cache", "clear", "powers.power", "--yes", cwd=cwd, home=nimflow_home)
    assert "removed 19 cached results" in cleared.stdout
    fresh = nimflow("run", str(pipeline), "--n", "20", "--exponent", "3", cwd=cwd, home=nimflow_home)
    assert "1 cache hit," in fresh.stdout

    recompute = nimflow(
        "run", str(pipeline), "--n", "20", "--exponent", "3", "--no-cache", cwd=cwd, home=nimflow_home
    )
    assert "0 cache hits" in recompute.stdout


def test_run_help_lists_the_workflow_inputs(pipeline: Path, nimflow_home: Path) -> None:
    result = nimflow("run", str(pipeline), "--help", cwd=pipeline.parent, home=nimflow_home)
    assert result.returncode == 0
    for text in (
        "Powers of the first n numbers.",
        "--n INTEGER",
        "--exponent INTEGER",
        "--shout / --no-shout",
        "--tags",
    ):
        assert text in result.stdout
    general = nimflow("run", "--help", cwd=pipeline.parent, home=nimflow_home)
    assert "--no-cache" in general.stdout and "--server" in general.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "many"], "Invalid value for '--n': 'many' is not a valid integer"),
        (["--tags", "[1"], "workflow input 'tags': expected list[str]"),
        (["--bogus", "1"], "No such option '--bogus'"),
    ],
)
def test_bad_inputs_are_usage_errors(
    pipeline: Path, nimflow_home: Path, args: list[str], message: str
) -> None:
    result = nimflow("run", str(pipeline), *args, cwd=pipeline.parent, home=nimflow_home)
    assert result.returncode == 2
    assert message in result.stderr


def test_json_inputs_are_parsed_from_the_signature(tmp_path: Path, nimflow_home: Path) -> None:
    path = tmp_path / "echo.py"
    path.write_text(
        textwrap.dedent(
            """
            import nimflow as nf

            @nf.task
            def join(tags: list[str], weights: dict[str, float], loud: bool) -> str:
                text = ",".join(tags) + ";" + ",".join(f"{k}={v}" for k, v in sorted(weights.items()))
                return text.upper() if loud else text

            @nf.workflow
            def echo(tags: list[str], weights: dict[str, float] = {}, loud: bool = False) -> str:
                return join(tags=tags, weights=weights, loud=loud)
            """
        )
    )
    result = nimflow(
        "run",
        str(path),
        "--tags",
        '["a", "b"]',
        "--weights",
        '{"x": 1.5}',
        "--loud",
        cwd=tmp_path,
        home=nimflow_home,
    )
    assert result.returncode == 0, result.stderr
    outputs = nimflow("outputs", "--json", cwd=tmp_path, home=nimflow_home)
    assert json.loads(outputs.stdout) == "A,B;X=1.5"
    missing = nimflow("run", str(path), cwd=tmp_path, home=nimflow_home)
    assert missing.returncode == 2 and "needs input 'tags' (list[str]); pass --tags VALUE" in missing.stderr


def test_file_errors_say_what_to_do(tmp_path: Path, nimflow_home: Path) -> None:
    missing = nimflow("run", "nope.py", cwd=tmp_path, home=nimflow_home)
    assert missing.returncode == 1 and "no such file: nope.py" in missing.stderr

    broken = tmp_path / "broken.py"
    broken.write_text("import nimflow as nf\nraise RuntimeError('bad module')\n")
    result = nimflow("run", str(broken), cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1
    assert "failed to import" in result.stderr and "RuntimeError: bad module" in result.stderr
    assert "Fix the error above" in result.stderr

    empty = tmp_path / "empty.py"
    empty.write_text("import nimflow as nf\n")
    result = nimflow("run", str(empty), cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1 and "defines no @workflow" in result.stderr

    several = tmp_path / "several.py"
    several.write_text(
        "import nimflow as nf\n@nf.task\ndef t() -> int:\n    return 1\n"
        "@nf.workflow\ndef one() -> int:\n    return t()\n@nf.workflow\ndef two() -> int:\n    return t()\n"
    )
    result = nimflow("run", str(several), cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1 and "several workflows: one, two. Name one" in result.stderr
    result = nimflow("run", str(several), "three", cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1 and "has no workflow 'three'" in result.stderr
    result = nimflow("run", str(several), "two", cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 0, result.stderr


def test_a_failing_task_shows_its_traceback_and_fails_the_run(tmp_path: Path, nimflow_home: Path) -> None:
    path = tmp_path / "failing.py"
    path.write_text(
        "import nimflow as nf\n@nf.task\ndef explode(x: int) -> int:\n    raise KeyError(f'missing {x}')\n"
        "@nf.workflow\ndef wf(x: int = 1) -> int:\n    return explode(x=x)\n"
    )
    result = nimflow("run", str(path), cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'missing 1'" in result.stderr
    assert "failed." in result.stderr and "nimflow show" in result.stderr
    show = nimflow("show", cwd=tmp_path, home=nimflow_home)
    assert "failed" in show.stdout and "KeyError: 'missing 1'" in show.stdout


def test_inspecting_nothing_is_a_clear_error(tmp_path: Path, nimflow_home: Path) -> None:
    result = nimflow("show", cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1 and "no runs yet" in result.stderr
    result = nimflow("outputs", "abc", cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1 and "no run 'abc'" in result.stderr
    result = nimflow("run", "x.py", "--server", "nim-actor", cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 1


def test_text_inputs_are_taken_as_text(tmp_path: Path, nimflow_home: Path) -> None:
    path = tmp_path / "texts.py"
    path.write_text(
        "import nimflow as nf\n@nf.task\ndef echo(text: str | None) -> str:\n    return repr(text)\n"
        "@nf.workflow\ndef wf(text: str | None = None, file: str = 'x') -> str:\n    return echo(text=text)\n"
    )
    result = nimflow("run", str(path), "--text", "2023", "--file", "[1]", cwd=tmp_path, home=nimflow_home)
    assert result.returncode == 0, result.stderr
    outputs = nimflow("outputs", "--json", cwd=tmp_path, home=nimflow_home)
    assert json.loads(outputs.stdout) == "'2023'"


def test_every_runs_at_a_fixed_rate_until_ctrl_c(tmp_path: Path, nimflow_home: Path) -> None:
    import signal
    import sqlite3
    import time

    path = tmp_path / "tick.py"
    path.write_text(
        "import nimflow as nf\n@nf.task\ndef tick(x: int) -> int:\n    return x\n"
        "@nf.workflow\ndef wf(x: int = 1) -> int:\n    return tick(x=x)\n"
    )
    env = {**os.environ, "NIMFLOW_HOME": str(nimflow_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimflow", "run", str(path), "--every", "0.3"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finished_runs() -> int:
        db = nimflow_home / "nimflow.db"
        if not db.exists():
            return 0
        with sqlite3.connect(db) as conn:
            try:
                return int(conn.execute("select count(*) from run where status = 'succeeded'").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    try:
        deadline = time.monotonic() + 60
        # A fourth finished run: the third's summary was printed before it started (a run's row is
        # stored just before its summary is printed, so Ctrl-C after the third could cut that).
        while finished_runs() < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert finished_runs() >= 4
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert out.count("succeeded in") >= 3 and "Ctrl-C to stop" in out
    bad = nimflow("run", str(path), "--every", "0", cwd=tmp_path, home=nimflow_home)
    assert bad.returncode == 1 and "--every 0: give the seconds between run starts" in bad.stderr
