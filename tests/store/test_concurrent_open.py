"""Any number of nimflow commands may start at once on a fresh or an existing database."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import create_engine, inspect, text

from nimflow._schema import HEAD

# Opens the store (which creates or migrates the schema) and reads the runs, as `nimflow runs` does,
# after waiting for the start signal so the eight processes open the database together.
OPENER = textwrap.dedent(
    """
    import sys
    sys.stdin.read(1)
    from nimflow._store import Run, Store
    from sqlmodel import select
    store = Store.open()
    with store.session() as session:
        list(session.exec(select(Run)))
    store.close()
    print("ok")
    """
)


def _start_together(count: int) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:  # all are started and importing; release them at once
        assert proc.stdin is not None
        proc.stdin.write("go")
        proc.stdin.close()
        proc.stdin = None  # so communicate() does not touch it again
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.timeout(240)
def test_eight_processes_open_a_fresh_database_at_once(store_url: str) -> None:
    for attempt in range(2):  # a fresh database each round: the race is on the first creation
        if attempt:
            engine = create_engine(store_url)
            with engine.begin() as conn:
                for table in ("claim", "taskrun", "cacheentry", "actorreplica", "run", "alembic_version"):
                    conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
            engine.dispose()
        results = _start_together(8)
        failed = [r.stderr[-1500:] for r in results if r.returncode != 0]
        assert not failed, failed[0]
        assert all(r.stdout.strip() == "ok" for r in results)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert {"run", "taskrun", "cacheentry", "actorreplica", "claim"} <= set(
            inspect(conn).get_table_names()
        )
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    engine.dispose()


@pytest.mark.timeout(240)
def test_eight_cli_commands_at_once_on_a_fresh_home(store_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nimflow", "runs"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            errors.append(err[-1500:])
    assert not errors, errors[0]
