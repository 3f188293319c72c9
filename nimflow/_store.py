"""The store: the engine, its schema, the batching writer, cache reads and claims.

Tables are in nimflow/_tables.py (re-exported here), the engine and its errors in _engine.py, the
schema (migrations, the lock) in _schema.py, the writer thread in _writer.py, leases in _claims.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel

from nimflow import _claims, _config, _engine, _schema
from nimflow._bulk import rows_by_key
from nimflow._tables import ActorReplica, Cached, CacheEntry, Claim, Run, TaskRun
from nimflow._writer import Writer

_CACHED_COLUMNS = ("key", "output", "source_hash", "run_id")

__all__ = ["ActorReplica", "CacheEntry", "Cached", "Claim", "Run", "Store", "TaskRun"]

T = TypeVar("T")


class Store:
    """The engine plus the batching writer. Open with `Store.open()`; close to flush.

    Opening brings the database to the current schema (migrations, under a lock shared by every
    process). Failures the user can fix (a read-only home, a bad URL, a missing driver, a lock held
    past NIMFLOW_DB_LOCK_TIMEOUT) raise StorageError.
    """

    _CHUNK = 4000  # keys per lookup: a bound on one statement's work, not on its parameters

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine.make_engine(url)
        self._writer: Writer | None = None
        self._lock = threading.Lock()
        self._tables: set[str] = set()
        self.ensure_tables()

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        return cls(url or _config.db_url())

    def guarded(self, fn: Callable[[], T]) -> T:
        """Run a database call, turning the failures the user can fix into StorageError."""
        try:
            return fn()
        except SQLAlchemyError as exc:
            error = _engine.explain(exc, self.url)
            if error is None:
                raise
            raise error from None
        except ImportError as exc:  # a driver imported on first connect
            raise _engine.missing_driver(self.engine.url, exc) from None

    def ensure_tables(self) -> None:
        """Migrate nimflow's tables, and create the tables defined since the store opened (a
        pipeline's own result tables)."""
        defined = set(SQLModel.metadata.tables)
        if defined - self._tables:
            with self._lock:  # tasks in worker threads may ask at once
                self.guarded(lambda: _schema.prepare(self.engine))
                self._tables = defined

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    # -- writes -------------------------------------------------------------------------------

    @property
    def writer(self) -> Writer:
        with self._lock:
            if self._writer is None:
                self._writer = Writer(self)
            return self._writer

    def add(self, row: SQLModel) -> None:
        """Insert (or replace) a row now, in its own transaction, for rare writes such as a run's start."""

        def write() -> None:
            with self.session() as session:
                session.merge(row)
                session.commit()

        self.guarded(write)

    def flush(self) -> None:
        if self._writer is not None:
            self.guarded(self._writer.flush)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        try:
            if writer is not None:
                self.guarded(writer.close)
        finally:
            self.engine.dispose()

    # -- cache reads --------------------------------------------------------------------------

    def cached(self, keys: Sequence[str]) -> dict[str, Cached]:
        """The cache entries among `keys`, looked up in chunks (plain rows: no ORM objects to build)."""
        found: dict[str, Cached] = {}
        unique = list(dict.fromkeys(keys))
        table = CacheEntry.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            for start in range(0, len(unique), self._CHUNK):
                chunk = unique[start : start + self._CHUNK]
                for key, output, source_hash, run_id in rows_by_key(conn, table, _CACHED_COLUMNS, chunk):
                    found[key] = Cached(output, source_hash, run_id)
        return found

    # -- claims: leases on cache keys being computed (see _claims) --------------------------------

    def claim(self, keys: Sequence[str], owner: str, lease_seconds: float) -> _claims.Claimed:
        """Atomically take the unclaimed or expired keys among `keys` (and those `owner` holds)."""
        return self.guarded(lambda: _claims.claim(self.engine, keys, owner, lease_seconds))

    def renew(self, owner: str, lease_seconds: float) -> int:
        """Extend every lease of `owner` to now + lease_seconds; the number of leases it holds."""
        return self.guarded(lambda: _claims.renew(self.engine, owner, lease_seconds))

    def release_all(self, owner: str) -> None:
        """Give up every lease `owner` holds."""
        self.guarded(lambda: _claims.release_all(self.engine, owner))

    def claimed_by_others(self, keys: Sequence[str], owner: str) -> set[str]:
        """The keys among `keys` that another owner holds under a live lease."""
        return self.guarded(lambda: _claims.claimed_by_others(self.engine, keys, owner))
