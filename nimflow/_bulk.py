"""Many rows in one statement: INSERT ... VALUES (..), (..), .. [ON CONFLICT DO UPDATE].

The writer thread commits while the event loop keeps a core busy. The sqlite3 module lets go of
the GIL around every step of a statement, and getting it back waits for the busy thread's switch
interval (5 ms): `executemany` steps once per row, so 64 rows took 0.6-0.8 s where one multi-row
statement took 11 ms. The SQL is plain text with positional parameters, built per batch (a
string join; SQLAlchemy's multi-VALUES `insert().values(rows)` spends more compiling it than
SQLite does running it), with the columns' own bind processors and scalar defaults applied.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.engine import Dialect

__all__ = ["key_array", "rows_by_key", "statement_sizes", "write_rows"]

_DIALECTS = ("sqlite", "postgresql")


def write_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, upsert: bool) -> None:
    """Insert rows that share one set of columns; with `upsert`, a row whose primary key exists
    replaces the stored one's other columns."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name not in _DIALECTS:
        _portable(conn, table, rows, upsert)
        return
    plan = _plan(table, tuple(rows[0]), upsert, dialect)
    if upsert:
        # One statement may not touch a row twice (PostgreSQL refuses): the last one wins. Sorted,
        # so two writers upserting some of the same keys lock them in one order (no deadlock).
        latest = {plan.key(row): row for row in rows}
        rows = [latest[key] for key in sorted(latest)]
    limit = max(1, dialect.insertmanyvalues_max_parameters // len(plan.columns))
    start = 0
    for size in statement_sizes(len(rows), limit):
        params: list[Any] = []
        for row in rows[start : start + size]:
            params.extend(plan.values(row))
        conn.exec_driver_sql(plan.sql(size), tuple(params))
        start += size


def statement_sizes(rows: int, limit: int) -> list[int]:
    """Rows per statement: powers of two, largest first, none above `limit`. The driver keeps each
    statement text it ran prepared (sqlite3 up to 128 per connection); one text per batch length
    kept 100 MB of statements over a 50,000-item map, and prepared every batch anew. Powers of two
    give a table a dozen texts, each reused, at most log2(rows) statements per batch."""
    cap = 1 << (limit.bit_length() - 1)
    sizes = [cap] * (rows // cap)
    rest = rows % cap
    sizes.extend(1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1)
    return sizes


class _Plan:
    """The SQL around the VALUES groups, and how a row becomes its parameters."""

    def __init__(self, table: Table, given: tuple[str, ...], upsert: bool, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        self._given = given
        self._keys = tuple(c.name for c in table.primary_key.columns)
        # Columns a row leaves out get their scalar column default, as SQLAlchemy's insert would.
        defaults = {
            c.name: c.default.arg  # type: ignore[attr-defined]
            for c in table.columns
            if c.name not in given and c.default is not None and c.default.is_scalar
        }
        self.columns = (*given, *defaults)
        self._defaults = tuple(defaults.values())
        self._processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            table.c[name].type.bind_processor(dialect) for name in given
        )
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._group = "(" + ", ".join([mark] * len(self.columns)) + ")"
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in self.columns)}) VALUES "
        self._tail = ""
        if upsert:
            updates = [c for c in self.columns if c not in self._keys]
            action = (
                "DO UPDATE SET " + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updates)
                if updates
                else "DO NOTHING"
            )
            self._tail = f" ON CONFLICT ({', '.join(quote(k) for k in self._keys)}) {action}"

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self._keys)

    def sql(self, rows: int) -> str:
        return self._head + ", ".join([self._group] * rows) + self._tail

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        out = [row[name] for name in self._given]
        for i, process in enumerate(self._processors):
            if process is not None and out[i] is not None:
                out[i] = process(out[i])
        return (*out, *self._defaults)


@functools.lru_cache(maxsize=64)
def _plan(table: Table, given: tuple[str, ...], upsert: bool, dialect: Dialect) -> _Plan:
    return _Plan(table, given, upsert, dialect)


def _portable(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], upsert: bool) -> None:
    """Other databases: SQLAlchemy's executemany, and a merge row by row for an upsert."""
    if not upsert:
        conn.execute(table.insert(), list(rows))
        return
    keys = [c.name for c in table.primary_key.columns]
    for row in rows:
        where = [table.c[k] == row[k] for k in keys]
        if conn.execute(table.update().where(*where).values(**row)).rowcount == 0:
            conn.execute(table.insert().values(**row))


def key_array(dialect: Dialect, keys: Sequence[str]) -> Any:
    """Keys as one parameter: a JSON text for SQLite (`json_each`), a list for PostgreSQL (text[])."""
    return json.dumps(list(keys)) if dialect.name == "sqlite" else list(keys)


def rows_by_key(conn: Connection, table: Table, columns: Sequence[str], keys: Sequence[str]) -> list[Any]:
    """The rows whose one-column primary key is among `keys`. The keys go in as one array, so the
    statement's text is the same for any number of them: `IN (?, ?, ..)` has one text per length,
    and the driver keeps each one prepared."""
    if not keys:
        return []
    dialect = conn.dialect
    (key_column,) = table.primary_key.columns
    if dialect.name not in _DIALECTS:
        query = select(*(table.c[c] for c in columns)).where(key_column.in_(list(keys)))
        return list(conn.execute(query))
    quote = dialect.identifier_preparer.quote
    wanted = ", ".join(f"t.{quote(c)}" for c in columns)
    key, name = quote(key_column.name), quote(table.name)
    if dialect.name == "sqlite":  # json_each outside: one primary-key lookup per key
        sql = f"SELECT {wanted} FROM json_each(?) AS j CROSS JOIN {name} AS t ON t.{key} = j.value"
    else:
        sql = f"SELECT {wanted} FROM {name} AS t WHERE t.{key} = ANY(%s)"
    return list(conn.exec_driver_sql(sql, (key_array(dialect, keys),)))
