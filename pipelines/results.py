"""Idempotent result tables for the pipelines: a rerun leaves them as they were.

A row's key is its table's primary key (say paper id and model). Saving a row whose key is new
inserts it; saving one whose key exists updates it only when the compared columns differ (a
paper whose text changed gets its new summary); an identical row is left alone, together with
the run id and time of the run that first wrote it.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session, SQLModel

_CHUNK = 500  # bound on parameters per IN (...)


def save_results(
    db: Session, table: type[SQLModel], rows: Sequence[dict[str, Any]], compare: Sequence[str]
) -> int:
    """Insert new keys, update changed ones, leave the rest; returns how many rows were written."""
    t: Any = table.__table__  # type: ignore[attr-defined]
    keys = [c.name for c in t.primary_key.columns]
    first = t.c[keys[0]]
    wanted = list(dict.fromkeys(row[keys[0]] for row in rows))
    existing: dict[tuple[Any, ...], Any] = {}
    for start in range(0, len(wanted), _CHUNK):
        found = db.execute(select(t).where(first.in_(wanted[start : start + _CHUNK]))).mappings()
        existing.update({tuple(r[k] for k in keys): r for r in found})
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for row in rows:
        key = tuple(row[k] for k in keys)
        old = existing.get(key)
        if old is None:
            new.append(row)
            existing[key] = row
        elif any(old[c] != row[c] for c in compare):
            changed.append(row)
            existing[key] = row
    if new:  # one multi-row INSERT: building ORM objects per row cost more than the run itself
        db.execute(_insert_if_absent(db, t), new)
    for row in changed:
        db.execute(update(t).where(*(t.c[k] == row[k] for k in keys)).values(**row))
    return len(new) + len(changed)


def _insert_if_absent(db: Session, t: Any) -> Any:
    """INSERT that skips keys present by now: another process saving the same key between our
    lookup and our insert must not fail the run (its row, as fresh as ours, stays)."""
    dialect = db.get_bind().dialect.name
    # The dialects' modules are imported here: PostgreSQL's costs a SQLite run 50 ms at start-up.
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(t).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(t).on_conflict_do_nothing()
    return insert(t)
