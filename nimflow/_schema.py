"""Bringing a database to nimflow's schema, one process at a time.

nimflow's own tables are migrated by Alembic (nimflow/migrations); a database made by 0.1's
create_all (no alembic_version) is recognised and stamped 0001 first. Pipelines' own result tables
stay create_all. Both happen under a lock that every process takes, so any number of commands may
open a fresh database at once: a file lock beside a SQLite file, pg_advisory_lock on PostgreSQL.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlmodel import SQLModel

from nimflow._tables import OWN_TABLES

HEAD = "0005"  # the newest revision in nimflow/migrations/versions
_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"nimflow schema").digest()[:8], "big", signed=True)


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def prepare(engine: Engine) -> None:
    """Migrate nimflow's tables to HEAD and create the pipelines' tables that are missing."""
    with engine.connect() as conn:  # the common case, an up-to-date database, takes no lock
        if current_revision(conn) == HEAD and not _missing_tables(conn):
            return
    with schema_lock(engine) as conn:
        _upgrade(conn)
        create_missing_tables(conn)


def create_missing_tables(conn: Connection) -> None:
    """create_all for the tables defined outside nimflow (a pipeline's own result tables)."""
    missing = _missing_tables(conn)
    if missing:
        SQLModel.metadata.create_all(conn, tables=missing)
        conn.commit()


def _missing_tables(conn: Connection) -> list[Any]:
    existing = set(inspect(conn).get_table_names())
    return [t for t in SQLModel.metadata.sorted_tables if t.name not in OWN_TABLES and t.name not in existing]


def _upgrade(conn: Connection) -> None:
    revision = current_revision(conn)
    if revision == HEAD:
        return
    if revision is None and not inspect(conn).has_table("run"):
        # A fresh database: the declared tables are HEAD's schema (a test holds them equal), and
        # create_all + stamp is much cheaper than importing Alembic and replaying every revision.
        own = [t for t in SQLModel.metadata.sorted_tables if t.name in OWN_TABLES]
        SQLModel.metadata.create_all(conn, tables=own)
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD})
        conn.commit()
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = conn
    if revision is None and inspect(conn).has_table("run"):
        command.stamp(config, "0001")  # made by 0.1's create_all, which is exactly revision 0001
    command.upgrade(config, "head")
    conn.commit()


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held under the schema lock of this database (for all processes)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        with engine.connect() as conn:
            yield conn
        return
    with open(f"{database}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
