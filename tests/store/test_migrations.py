"""A database made by nimflow 0.1 (create_all, no alembic_version) is stamped 0001 and upgraded,
keeping its rows; a fresh one gets the same schema from the migrations as the tables declare."""

from __future__ import annotations

import os
import socket

from sqlalchemy import create_engine, inspect, text

from nimflow._schema import HEAD
from nimflow._store import ActorReplica, CacheEntry, Claim, Run, Store, TaskRun

# The schema of 0.1 as its create_all made it on SQLite and PostgreSQL (plain DDL, no nimflow code).
SCHEMA_0_1 = [
    """CREATE TABLE run (id VARCHAR NOT NULL, workflow VARCHAR NOT NULL, file VARCHAR, inputs VARCHAR NOT NULL,
    status VARCHAR NOT NULL, started_at FLOAT NOT NULL, ended_at FLOAT, error VARCHAR, outputs VARCHAR,
    pid INTEGER, served_by VARCHAR, PRIMARY KEY (id))""",
    "CREATE INDEX ix_run_workflow ON run (workflow)",
    "CREATE INDEX ix_run_started_at ON run (started_at)",
    """CREATE TABLE taskrun (id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, node VARCHAR NOT NULL,
    task VARCHAR NOT NULL, item INTEGER, status VARCHAR NOT NULL, cache_hit BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL, started_at FLOAT, ended_at FLOAT, error VARCHAR, cache_key VARCHAR,
    requests INTEGER NOT NULL, retries INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, PRIMARY KEY (id))""",
    "CREATE INDEX ix_taskrun_run_id ON taskrun (run_id)",
    "CREATE INDEX ix_taskrun_task ON taskrun (task)",
    """CREATE TABLE cacheentry (key VARCHAR NOT NULL, task VARCHAR NOT NULL, cache_version VARCHAR NOT NULL,
    source_hash VARCHAR NOT NULL, output VARCHAR NOT NULL, created_at FLOAT NOT NULL, run_id VARCHAR,
    PRIMARY KEY (key))""",
    "CREATE INDEX ix_cacheentry_task ON cacheentry (task)",
    """CREATE TABLE actorreplica (id VARCHAR NOT NULL, actor VARCHAR NOT NULL, replica INTEGER NOT NULL,
    kind VARCHAR NOT NULL, handle VARCHAR NOT NULL, base_url VARCHAR NOT NULL, config_hash VARCHAR NOT NULL,
    model VARCHAR NOT NULL, ttl_seconds FLOAT NOT NULL, last_used FLOAT NOT NULL, started_at FLOAT NOT NULL,
    status VARCHAR NOT NULL, PRIMARY KEY (id))""",
    "CREATE INDEX ix_actorreplica_actor ON actorreplica (actor)",
    """INSERT INTO run (id, workflow, inputs, status, started_at, ended_at, outputs, pid)
    VALUES ('r-old', 'wf', '{}', 'succeeded', 1.0, 2.0, '[1]', 42)""",
    """INSERT INTO taskrun (id, run_id, node, task, item, status, cache_hit, attempts, requests, retries,
    prompt_tokens, completion_tokens) VALUES ('r-old/n0/0', 'r-old', 'n0', 'work', 0, 'succeeded', false, 1,
    0, 0, 0, 0)""",
    """INSERT INTO cacheentry (key, task, cache_version, source_hash, output, created_at)
    VALUES ('k-old', 'work', '1', 'h', '2', 1.5)""",
]


def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def test_a_0_1_database_is_upgraded_and_keeps_its_rows(store_url: str) -> None:
    engine = create_engine(store_url)
    with engine.begin() as conn:
        for statement in SCHEMA_0_1:
            conn.execute(text(statement))
    engine.dispose()

    store = Store.open()
    assert store.cached(["k-old"])["k-old"].output == "2"
    with store.session() as session:
        run = session.get(Run, "r-old")
        assert run is not None and run.outputs == "[1]" and run.heartbeat_at is None and run.host is None
        item = session.get(TaskRun, "r-old/n0/0")
        assert item is not None and item.status == "succeeded" and item.pid is None
    assert store.claim(["k-new"], "me", 30).held == {"k-new"}  # the claim table is there
    store.close()
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    engine.dispose()
    # The migrated schema is the declared one, which a fresh database gets through create_all.
    for model in (Run, TaskRun, CacheEntry, ActorReplica, Claim):
        declared = {c.name for c in model.__table__.columns}  # type: ignore[attr-defined]
        assert _columns(store_url, model.__tablename__) == declared  # type: ignore[arg-type]


def test_fresh_database_matches_the_declared_tables(store_url: str) -> None:
    Store.open().close()
    for model in (Run, TaskRun):
        declared = {c.name for c in model.__table__.columns}  # type: ignore[attr-defined]
        assert _columns(store_url, model.__tablename__) == declared  # type: ignore[arg-type]


def test_items_record_the_host_and_pid_that_wrote_them(store_url: str) -> None:
    store = Store.open()
    store.writer.insert(
        TaskRun,
        {"id": "r/n0/0", "run_id": "r", "node": "n0", "task": "t", "item": 0, "status": "succeeded",
         "cache_hit": False, "attempts": 1, "requests": 0, "retries": 0, "prompt_tokens": 0,
         "completion_tokens": 0},
    )  # fmt: skip
    store.flush()
    with store.session() as session:
        row = session.get(TaskRun, "r/n0/0")
        assert row is not None and row.host == socket.gethostname() and row.pid == os.getpid()
    store.close()
