"""Leases on cache keys, so cooperating processes on one database compute each item once.

A claim row says "owner is computing key until expires_at". Taking keys is one atomic statement
per chunk on SQLite and PostgreSQL alike: INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE the
existing lease has expired (or is already ours). Rows that conflict with a live lease of another
owner are left alone; RETURNING says which keys this owner now holds. An owner that dies stops
renewing, and its leases are taken over once they expire.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from nimflow._tables import Claim

_CHUNK = 500  # keys per statement: a bound on SQL parameters
_table = Claim.__table__  # type: ignore[attr-defined]


def _chunks(keys: Iterable[str]) -> Iterable[list[str]]:
    # Sorted: processes claiming overlapping keys lock their rows in one order, so PostgreSQL
    # never has two of them wait on each other (a deadlock) inside one INSERT ... ON CONFLICT.
    unique = sorted(set(keys))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


class Claimed(NamedTuple):
    held: set[str]  # the keys `owner` now holds
    taken_over: set[str]  # among them, those another owner's (expired) lease held just before


def claim(engine: Engine, keys: Sequence[str], owner: str, lease_seconds: float) -> Claimed:
    """Take the keys that are unclaimed, expired or already ours; say which `owner` now holds."""
    held: set[str] = set()
    others: set[str] = set()
    for chunk in _chunks(keys):
        # Read before the upsert, outside its transaction (a SQLite read snapshot that then writes
        # fails when another process committed meanwhile): a key another owner held just before and
        # ours after was taken over from an expired lease (or one released in between).
        with engine.connect() as conn:
            others.update(
                conn.execute(
                    select(_table.c.key).where(_table.c.key.in_(chunk), _table.c.owner != owner)
                ).scalars()
            )
        now = time.time()
        rows = [
            {"key": k, "owner": owner, "expires_at": now + lease_seconds, "claimed_at": now} for k in chunk
        ]
        with engine.begin() as conn:
            held.update(conn.execute(_upsert(engine.dialect.name), rows).scalars())
    return Claimed(held, held & others)


@functools.cache
def _upsert(dialect: str) -> Any:
    """One statement for every chunk (bound per row, compiled once): a multi-VALUES statement built
    per chunk cost more to compile than to run."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(_table)
    return stmt.on_conflict_do_update(
        index_elements=[_table.c.key],
        set_={
            "owner": stmt.excluded.owner,
            "expires_at": stmt.excluded.expires_at,
            "claimed_at": stmt.excluded.claimed_at,
        },
        # Expired (its expiry is before this claim's time), or already ours.
        where=or_(_table.c.expires_at < stmt.excluded.claimed_at, _table.c.owner == stmt.excluded.owner),
    ).returning(_table.c.key)


def renew(engine: Engine, owner: str, lease_seconds: float) -> int:
    """Push back the expiry of every lease `owner` holds; how many it holds."""
    with engine.begin() as conn:
        result = conn.execute(
            update(_table).where(_table.c.owner == owner).values(expires_at=time.time() + lease_seconds)
        )
        return int(result.rowcount)


def release(engine: Engine, keys: Iterable[str], owner: str) -> None:
    """Drop `owner`'s leases on `keys` (done or abandoned); others' leases are untouched."""
    with engine.begin() as conn:
        for chunk in _chunks(keys):
            conn.execute(delete(_table).where(_table.c.owner == owner, _table.c.key.in_(chunk)))


def release_all(engine: Engine, owner: str) -> None:
    """Drop every lease of `owner`: one statement, however many keys it holds."""
    with engine.begin() as conn:
        conn.execute(delete(_table).where(_table.c.owner == owner))


def claimed_by_others(engine: Engine, keys: Sequence[str], owner: str) -> set[str]:
    """The keys among `keys` under a live lease of another owner (to wait for, not compute)."""
    found: set[str] = set()
    now = time.time()
    with engine.connect() as conn:
        for chunk in _chunks(keys):
            query = select(_table.c.key).where(
                _table.c.key.in_(chunk), _table.c.owner != owner, _table.c.expires_at >= now
            )
            found.update(conn.execute(query).scalars())
    return found
