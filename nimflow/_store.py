"""The database: sqlmodel tables, the engine, and one writer thread that batches writes.

SQLite allows one writer at a time. Instead of every task opening its own transaction (and
contending for the lock thousands of times a second in a big map), finished rows go onto a
queue that a single thread drains, committing whatever has piled up in one transaction. A crash
loses at most the rows still on the queue, which belong to items that were in flight.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Engine, event, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel, create_engine

from nimflow import _config

# --------------------------------------------------------------------------------------------------
# Tables


class Run(SQLModel, table=True):
    id: str = Field(primary_key=True)
    workflow: str = Field(index=True)
    file: str | None = None
    inputs: str = "{}"  # JSON
    status: str = "running"  # running | succeeded | failed | cancelled
    started_at: float = Field(default_factory=time.time, index=True)
    ended_at: float | None = None
    error: str | None = None
    outputs: str | None = None  # JSON
    pid: int | None = None  # so `nimflow kill` can reach the process that runs it
    served_by: str | None = None  # e.g. "nim-actor=fake"
    heartbeat_at: float | None = None  # written every ~2 s while the run's process lives


class TaskRun(SQLModel, table=True):
    """One row per node, and one per map item (item = its index in the map)."""

    id: str = Field(primary_key=True)  # "<run>/<node>" or "<run>/<node>/<item>"
    run_id: str = Field(index=True)
    node: str  # node id inside the run, e.g. "n3"
    task: str = Field(index=True)
    item: int | None = None
    status: str = "running"  # running | succeeded | failed | skipped | cancelled
    cache_hit: bool = False
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    cache_key: str | None = None
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CacheEntry(SQLModel, table=True):
    key: str = Field(primary_key=True)
    task: str = Field(index=True)
    cache_version: str
    source_hash: str
    output: str  # JSON
    created_at: float = Field(default_factory=time.time)
    run_id: str | None = None


class Cached(NamedTuple):
    output: str  # JSON
    source_hash: str


class ActorReplica(SQLModel, table=True):
    """A model server replica that nimflow started (or adopted) and may stop when its TTL passes."""

    id: str = Field(primary_key=True)  # "<actor>/<replica>"
    actor: str = Field(index=True)
    replica: int
    kind: str  # docker | process | endpoint | fake
    handle: str  # container id, pid, or URL
    base_url: str
    config_hash: str
    model: str
    ttl_seconds: float
    last_used: float = Field(default_factory=time.time)
    started_at: float = Field(default_factory=time.time)
    status: str = "running"


# --------------------------------------------------------------------------------------------------
# Engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL: readers never block the writer; NORMAL sync is durable against a process crash.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """The engine plus the batching writer. Open with `Store.open()`; close to flush."""

    _CHUNK = 500  # bound on SQL parameters per IN (...) query

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._writer: _Writer | None = None
        self._lock = threading.Lock()
        self._tables: set[str] = set()
        self.ensure_tables()

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        return cls(url or _config.db_url())

    def ensure_tables(self) -> None:
        """Create the tables defined since the store opened (a pipeline's own result tables)."""
        defined = set(SQLModel.metadata.tables)
        if defined - self._tables:
            with self._lock:  # tasks in worker threads may ask at once
                SQLModel.metadata.create_all(self.engine)
                self._tables = defined

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    # -- writes -------------------------------------------------------------------------------

    @property
    def writer(self) -> _Writer:
        with self._lock:
            if self._writer is None:
                self._writer = _Writer(self)
            return self._writer

    def add(self, row: SQLModel) -> None:
        """Insert (or replace) a row now, in its own transaction, for rare writes such as a run's start."""
        with self.session() as session:
            session.merge(row)
            session.commit()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
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
                query = sa_select(table.c.key, table.c.output, table.c.source_hash).where(
                    table.c.key.in_(chunk)
                )
                for key, output, source_hash in conn.execute(query):
                    found[key] = Cached(output, source_hash)
        return found

    def upsert_many(self, model: type[SQLModel], rows: Iterable[dict[str, Any]], conn: Any) -> None:
        """INSERT ... ON CONFLICT DO UPDATE for SQLite and PostgreSQL; merge() elsewhere."""
        rows = list(rows)
        if not rows:
            return
        table = model.__table__  # type: ignore[attr-defined]
        dialect = self.engine.dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = sqlite_insert if dialect == "sqlite" else pg_insert
            stmt = insert(table)
            keys = [c.name for c in table.primary_key.columns]
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
            )
            conn.execute(stmt, rows)
        else:
            with Session(bind=conn) as session:
                for row in rows:
                    session.merge(model(**row))
                session.flush()


# --------------------------------------------------------------------------------------------------
# The writer thread


class _Writer:
    """Drains queued writes in batches, one transaction per batch."""

    _MAX_BATCH = 5_000
    # Back-pressure: when rows come faster than the database takes them, producers wait here
    # instead of the backlog (and the process's memory) growing with every finished item.
    _MAX_QUEUED = 20_000

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self._MAX_QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="nimflow-db-writer", daemon=True)
        self._thread.start()

    def insert(self, model: type[SQLModel], row: dict[str, Any]) -> None:
        self._queue.put(("insert", (model, row)))

    def upsert(self, model: type[SQLModel], row: dict[str, Any]) -> None:
        self._queue.put(("upsert", (model, row)))

    def update(self, model: type[SQLModel], key: Any, values: dict[str, Any]) -> None:
        self._queue.put(("update", (model, key, values)))

    def flush(self) -> None:
        """Block until everything queued so far is committed; re-raise a failed write."""
        done = threading.Event()
        self._queue.put(("barrier", done))
        done.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        self.flush()
        self._queue.put(("stop", None))
        self._thread.join()

    def _loop(self) -> None:
        while True:
            ops = [self._queue.get()]
            while len(ops) < self._MAX_BATCH:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(kind == "stop" for kind, _ in ops)
            try:
                self._commit([op for op in ops if op[0] in ("insert", "upsert", "update")])
            except BaseException as exc:  # surfaced by the next flush()
                self._error = exc
            for kind, payload in ops:
                if kind == "barrier":
                    payload.set()
            if stop:
                return

    def _commit(self, ops: list[tuple[str, Any]]) -> None:
        if not ops:
            return
        # Rows of one kind, table and set of columns go in one executemany (which takes its columns
        # from the first row). Inserts and upserts first, then updates in their order: an update
        # refers to a row inserted earlier, possibly in this same batch.
        groups: dict[tuple[str, Any, frozenset[str]], list[dict[str, Any]]] = {}
        updates: list[tuple[Any, Any, dict[str, Any]]] = []
        for kind, payload in ops:
            if kind == "update":
                updates.append(payload)
            else:
                model, row = payload
                groups.setdefault((kind, model, frozenset(row)), []).append(row)
        store = self._store
        with store.engine.begin() as conn:
            for (kind, model, _columns), rows in groups.items():
                if kind == "insert":
                    conn.execute(model.__table__.insert(), rows)
                else:
                    store.upsert_many(model, rows, conn)
            for model, key, values in updates:
                pk = next(iter(model.__table__.primary_key.columns))
                conn.execute(update(model.__table__).where(pk == key).values(**values))
