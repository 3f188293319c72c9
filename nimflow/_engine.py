"""The SQLAlchemy engine for NIMFLOW_DB_URL, and the storage errors that name what to fix.

SQLite gets WAL (readers never block the one writer) and a busy timeout; PostgreSQL gets psycopg 3
(`pip install 'nimflow[postgres]'`). A URL is only ever shown with its password masked.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from nimflow._exceptions import StorageError

# How long a statement waits for another process's write lock before StorageError.
LOCK_TIMEOUT_SECONDS = float(os.environ.get("NIMFLOW_DB_LOCK_TIMEOUT", "30"))


def masked(url: str | URL) -> str:
    """The URL with its password hidden (never print a URL any other way)."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: show only its scheme, which holds no secret
        text = str(url)
        return (
            text.split("://", 1)[0] + "://..." if "://" in text else repr(text) if "@" not in text else "..."
        )
    return parsed.render_as_string(hide_password=True)


def parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"NIMFLOW_DB_URL={masked(url)} is not a database URL. Use a SQLAlchemy URL such as "
            "sqlite:////path/nimflow.db or postgresql+psycopg://user:password@host/db, or unset it."
        ) from None


def make_engine(url: str) -> Engine:
    parsed = parse(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        # The same deadline as SQLite's busy timeout for a lock held by another process.
        lock_timeout = {"options": f"-c lock_timeout={int(LOCK_TIMEOUT_SECONDS * 1000)}"}
        connect_args = lock_timeout if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except NoSuchModuleError:
        raise StorageError(
            f"NIMFLOW_DB_URL={masked(parsed)}: SQLAlchemy knows no database {parsed.drivername!r}. "
            "Use sqlite:///... or postgresql+psycopg://..."
        ) from None
    except ImportError as exc:
        raise missing_driver(parsed, exc) from None


def missing_driver(url: URL, exc: ImportError) -> StorageError:
    if url.get_backend_name() == "postgresql":
        fix = "pip install 'nimflow[postgres]'"
    else:
        fix = f"install the Python driver for {url.drivername}"
    return StorageError(f"NIMFLOW_DB_URL={masked(url)} needs the driver {exc.name or url.drivername}: {fix}.")


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        check_writable(Path(database))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": LOCK_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_SECONDS * 1000)}")
        # NORMAL sync is durable against a process crash in WAL mode.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def check_writable(db: Path) -> None:
    """SQLite needs to write the file and, for its journal, the folder it is in."""
    folder = db.parent
    where = "NIMFLOW_DB_URL" if os.environ.get("NIMFLOW_DB_URL") else "NIMFLOW_HOME"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"{where}: cannot create the folder {folder} ({exc.strerror}). "
            f"Point {where} at a folder you can write."
        ) from None
    unwritable = not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK))
    if unwritable:
        raise StorageError(
            f"{where}: the database {db} is not writable (its folder or file is read-only). "
            f"Point {where} at a folder you can write, or fix its permissions."
        )


def explain(exc: BaseException, url: str) -> StorageError | None:
    """A StorageError for a database failure the user can fix, or None to let it through."""
    orig = getattr(exc, "orig", exc)
    text = str(orig or exc)
    where = "NIMFLOW_DB_URL" if os.environ.get("NIMFLOW_DB_URL") else "NIMFLOW_HOME"
    if isinstance(exc, OperationalError | sqlite3.OperationalError):
        # SQLite says "database is locked"; PostgreSQL's lock_timeout is SQLSTATE 55P03 (its
        # deadlock report also says "blocked by process": not a lock held past the deadline).
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate == "55P03" or (sqlstate is None and ("is locked" in text or "busy" in text)):
            return StorageError(
                f"the database {masked(url)} stayed locked by another process for more than "
                f"{LOCK_TIMEOUT_SECONDS:g} s. Wait for it to finish, or raise NIMFLOW_DB_LOCK_TIMEOUT (seconds)."
            )
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return StorageError(
                f"{where}: the database {masked(url)} cannot be written ({text}). "
                f"Point {where} at a folder you can write."
            )
        return StorageError(f"NIMFLOW_DB_URL={masked(url)}: cannot use the database ({_no_url(text, url)}).")
    return None


def _no_url(text: str, url: str) -> str:
    """A driver's message, first line, without the URL's password should it quote it."""
    try:
        password = make_url(url).password
    except Exception:
        password = None
    line = text.strip().splitlines()[0] if text.strip() else text
    return line.replace(str(password), "***") if password else line
