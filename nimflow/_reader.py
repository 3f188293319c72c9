"""A cheap way into the store for the commands that only read it (`runs`, `show`, `cache ls`).

Opening a Store imports SQLAlchemy and SQLModel and checks the schema: some 0.8 s of CPU, four
times what `nimflow runs` needs in all. A SQLite file already at the newest revision is read here
through the standard library's sqlite3 instead; anything else (a new or older database, another
backend) opens a Store first, which migrates it, and is read through its engine. The SQL is the
same for both: `:name` parameters, which sqlite3 and SQLAlchemy's text() both take.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nimflow import _config

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["Reader", "open_reader", "reader_for"]

_VERSIONS = Path(__file__).with_name("migrations") / "versions"
_PREFIX = "sqlite:///"


class _HasEngine(Protocol):
    @property
    def engine(self) -> Engine: ...


class Reader:
    """Runs SQL on the store: `rows` for a query, `execute` for a write (committed at once)."""

    def __init__(self, *, path: str | None = None, engine: Engine | None = None, url: str = "") -> None:
        self.url = url
        self._engine = engine
        self._sqlite: sqlite3.Connection | None = None
        if path is not None:
            timeout = float(os.environ.get("NIMFLOW_DB_LOCK_TIMEOUT", "30"))
            self._sqlite = sqlite3.connect(path, timeout=timeout, check_same_thread=False)

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            with self._errors():
                return self._sqlite.execute(sql, dict(params or {})).fetchall()
        from sqlalchemy import text

        assert self._engine is not None
        with self._engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), dict(params or {}))]

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """A write; the number of rows it changed."""
        if self._sqlite is not None:
            with self._errors(), self._sqlite:
                return self._sqlite.execute(sql, dict(params or {})).rowcount
        from sqlalchemy import text

        assert self._engine is not None
        with self._engine.begin() as conn:
            return int(conn.execute(text(sql), dict(params or {})).rowcount)

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # a lock held too long, an unreadable file
            from nimflow._engine import explain

            error = explain(exc, self.url)
            if error is None:
                raise
            raise error from None


def reader_for(source: Reader | _HasEngine) -> Reader:
    """A Reader as it is, or one on an open Store's engine."""
    return source if isinstance(source, Reader) else Reader(engine=source.engine)


@contextmanager
def open_reader() -> Iterator[Reader]:
    """A Reader on NIMFLOW_DB_URL (or the SQLite file in NIMFLOW_HOME), closed on exit."""
    url = _config.db_url()
    path = _current_sqlite_file(url)
    if path is not None:
        reader = Reader(path=path, url=url)
        try:
            yield reader
        finally:
            reader.close()
        return
    from nimflow._store import Store

    store = Store.open(url)  # creates or migrates the database
    try:
        yield Reader(engine=store.engine, url=url)
    finally:
        store.close()


def _current_sqlite_file(url: str) -> str | None:
    """The path of a plain SQLite file URL whose database exists at the newest revision."""
    path = url[len(_PREFIX) :] if url.startswith(_PREFIX) else ""
    if not path or "?" in path or path.startswith(":memory:") or path.startswith("file:"):
        return None
    if not os.path.isfile(path):
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:  # no alembic_version yet (0.1's create_all), or unreadable
        return None
    return path if row is not None and row[0] == newest_revision() else None


def newest_revision() -> str:
    """The head of nimflow/migrations: revision ids are the version files' number prefixes."""
    return max(name.split("_", 1)[0] for name in os.listdir(_VERSIONS) if name[:4].isdigit())
