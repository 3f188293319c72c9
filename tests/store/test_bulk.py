"""Many rows in one statement: what executemany did, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import socket
import time

from sqlalchemy import event, select

from nimflow._bulk import rows_by_key, statement_sizes, write_rows
from nimflow._store import Store
from nimflow._tables import CacheEntry, TaskRun

CACHE = CacheEntry.__table__  # type: ignore[attr-defined]
TASKRUN = TaskRun.__table__  # type: ignore[attr-defined]


def entry(key: str, output: str) -> dict[str, object]:
    return {"key": key, "task": "t", "cache_version": "1", "source_hash": "h", "output": output,
            "created_at": time.time(), "run_id": "r"}  # fmt: skip


def test_an_upsert_replaces_stored_rows_and_the_last_of_a_repeated_key_wins(store_url: str) -> None:
    with Store.open(store_url) as store, store.engine.begin() as conn:
        write_rows(conn, CACHE, [entry("a", "1"), entry("b", "1")], upsert=True)
        write_rows(conn, CACHE, [entry("b", "2"), entry("c", "1"), entry("c", "3")], upsert=True)
        stored: dict[str, str] = dict(conn.execute(select(CACHE.c.key, CACHE.c.output)).all())
    assert stored == {"a": "1", "b": "2", "c": "3"}


def test_left_out_columns_get_their_defaults_and_booleans_round_trip(store_url: str) -> None:
    rows = [{"id": f"r/n1/{i}", "run_id": "r", "node": "n1", "task": "t", "item": i, "status": "succeeded",
             "cache_hit": i % 2 == 0} for i in range(4)]  # fmt: skip
    with Store.open(store_url) as store, store.engine.begin() as conn:
        write_rows(conn, TASKRUN, rows, upsert=False)
        got = conn.execute(select(TASKRUN.c.item, TASKRUN.c.cache_hit, TASKRUN.c.host, TASKRUN.c.pid)).all()
    assert sorted(got) == [(i, i % 2 == 0, socket.gethostname(), os.getpid()) for i in range(4)]


def test_a_batch_over_the_parameter_limit_is_split_into_several_statements(store_url: str) -> None:
    with Store.open(store_url) as store:
        limit = store.engine.dialect.insertmanyvalues_max_parameters
        n = limit // len(CACHE.columns) * 2 + 7  # three statements
        with store.engine.begin() as conn:
            write_rows(conn, CACHE, [entry(f"k{i}", str(i)) for i in range(n)], upsert=True)
            stored: dict[str, str] = dict(conn.execute(select(CACHE.c.key, CACHE.c.output)).all())
    assert stored == {f"k{i}": str(i) for i in range(n)}


def test_a_batch_is_one_statement_not_one_per_row(store_url: str) -> None:
    """The reason for the module: each step of a statement gives up the GIL, and under a busy event
    loop getting it back takes a switch interval (5 ms), so a batch must not step once per row."""
    statements: list[str] = []
    with Store.open(store_url) as store:
        event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        with store.engine.begin() as conn:
            write_rows(conn, CACHE, [entry(f"x{i}", "v") for i in range(64)], upsert=True)
    inserts = [s for s in statements if s.startswith("INSERT INTO cacheentry")]
    assert len(inserts) == 1 and inserts[0].count("), (") == 63


def test_batches_of_any_length_reuse_a_few_statement_texts(store_url: str) -> None:
    """The driver keeps every statement text it ran prepared: one text per batch length kept
    100 MB of them over a 50,000-item map. Batches of 1 to 100 rows use seven texts, largest
    first, and store every row."""
    statements: list[str] = []
    with Store.open(store_url) as store:
        event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        with store.engine.begin() as conn:
            for length in range(1, 101):
                write_rows(conn, CACHE, [entry(f"{length}/{i}", "v") for i in range(length)], upsert=True)
            stored = conn.execute(select(CACHE.c.key)).scalars().all()
    inserts = [s for s in statements if s.startswith("INSERT INTO cacheentry")]
    assert len(set(inserts)) == 7  # 1, 2, 4, .., 64 rows: 100 is 64 + 32 + 4
    assert len(stored) == sum(range(1, 101))
    assert statement_sizes(100, limit=1000) == [64, 32, 4]
    assert statement_sizes(20, limit=6) == [4, 4, 4, 4, 4] and statement_sizes(0, limit=6) == []


def test_rows_by_key_finds_any_number_of_keys_with_one_statement_text(store_url: str) -> None:
    statements: list[str] = []
    with Store.open(store_url) as store:
        with store.engine.begin() as conn:
            write_rows(conn, CACHE, [entry(f"k{i}", str(i)) for i in range(300)], upsert=True)
        event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        with store.engine.connect() as conn:
            found = {n: dict(rows_by_key(conn, CACHE, ("key", "output"), [f"k{i}" for i in range(n)] + ["absent"]))
                     for n in (1, 7, 300)}  # fmt: skip
            assert rows_by_key(conn, CACHE, ("key",), []) == []
    assert all(found[n] == {f"k{i}": str(i) for i in range(n)} for n in found)
    assert len(set(statements)) == 1
