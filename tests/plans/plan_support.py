"""Helpers for the launch-plan tests: pipeline files written per test, `nimflow serve` as a real
subprocess, the CLI, and plain sqlite3 reads of the database."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Workflows the tests' plan files share. `produce` publishes a version of the Numbers artifact
# (and fails when asked to); `consume` reads one; `slow` takes a while, item by item.
COMMON = """
import time
from datetime import timedelta
from typing import Annotated

import nimflow as nf

Numbers = nf.Artifact("Numbers")


@nf.task
def number(n: int, fail: bool) -> int:
    if fail:
        raise ValueError("asked to fail")
    return n


@nf.workflow
def produce(n: int = 1, fail: bool = False) -> Annotated[int, Numbers]:
    return number(n=n, fail=fail)


@nf.task
def double(x: int) -> int:
    return 2 * x


@nf.workflow
def consume(x: int = Numbers.query()) -> int:
    return double(x=x)


@nf.task
def nap(i: int) -> int:
    time.sleep(0.5)
    return i


@nf.workflow
def slow(items: list[int] = list(range(40))) -> list[int]:
    return nf.map_task(nap, concurrency=2)(i=items)
"""


def plan_file(folder: Path, name: str, plans: str) -> Path:
    """A pipeline file with the shared workflows and the given launch plans."""
    path = folder / f"{name}.py"
    path.write_text(COMMON + "\n" + plans, encoding="utf-8")
    return path


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "NIMFLOW_HOME": str(home), "COLUMNS": "200"}


def cli(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimflow", *args],
        cwd=ROOT,
        env=env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Serve:
    """`nimflow serve FILES` in its own process, its output in a file."""

    def __init__(self, home: Path, *args: str, log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nimflow", "serve", *args],
            cwd=ROOT,
            env=env(home),
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_serving(self, timeout: float = 60) -> None:
        wait_for(lambda: "serving" in self.output, timeout, lambda: self.output)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._out.close()
        return code


def wait_for(predicate: Callable[[], Any], timeout: float, details: Callable[[], str] = lambda: "") -> Any:
    """Poll until `predicate` returns something true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s. {details()}")
        time.sleep(0.1)


def query(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the database; none while the table does not exist yet."""
    path = home / "nimflow.db"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def launches(home: Path, plan: str) -> list[tuple[Any, ...]]:
    """(key, planned_at, status, run_id, claimed_at) of a plan's launches, oldest first."""
    return query(
        home,
        "select key, planned_at, status, run_id, claimed_at from launch where plan = ? order by claimed_at",
        plan,
    )


def finished(home: Path, plan: str) -> list[tuple[Any, ...]]:
    return [row for row in launches(home, plan) if row[2] in ("succeeded", "failed", "cancelled")]
