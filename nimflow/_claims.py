"""Leases on cache keys, so cooperating processes on one database compute each item once.

A claim row says "owner is computing key until expires_at". Taking keys is one atomic statement
per chunk on SQLite and PostgreSQL alike: INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE the
existing lease has expired (or is already ours). Rows that conflict with a live lease of another
owner are left alone; then this owner reads which keys it holds (RETURNING on PostgreSQL). An
owner that dies stops renewing, and its leases are taken over once they expire.

The keys of a chunk go in as one array, a JSON text on SQLite (`json_each`), a text[] on
PostgreSQL (`unnest`), and come back as one: every statement here is one step on SQLite and one
round trip on PostgreSQL. Bound row by row, PostgreSQL's claims cost 140 us a key. On SQLite the
claims run in a worker thread while the event loop keeps a core busy, and the sqlite3 module gives
up the GIL at every step (a RETURNING row, a fetched row): getting it back waits for the busy
thread's switch interval, so a 500-row RETURNING held the database's write lock, and with it the
writer's commits, for up to 2.5 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, delete, select, text, update

from nimflow._bulk import key_array
from nimflow._tables import Claim

_CHUNK = 500  # keys per statement: a bound on how long one claim holds the write lock
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
    dialect = engine.dialect.name
    for chunk in _chunks(keys):
        # Read before the upsert, outside its transaction (a SQLite read snapshot that then writes
        # fails when another process committed meanwhile): a key another owner held just before and
        # ours after was taken over from an expired lease (or one released in between).
        with engine.connect() as conn:
            others |= _keys_of_others(conn, chunk, owner)
        now = time.time()
        params = {
            "keys": key_array(engine.dialect, chunk),
            "owner": owner,
            "expires": now + lease_seconds,
            "now": now,
        }
        with engine.begin() as conn:
            if dialect == "sqlite":
                conn.execute(_SQLITE_TAKE, params)
                held |= _decode(conn.execute(_SQLITE_HELD, params).scalar_one())
            else:  # RETURNING: the keys inserted or updated, in one result
                held.update(conn.execute(_PG_TAKE, params).scalars())
    return Claimed(held, held & others)


_TAKE = (
    "INSERT INTO claim (key, owner, expires_at, claimed_at) SELECT k, :owner, :expires, :now FROM {keys} "
    "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
    "claimed_at = excluded.claimed_at "
    # Expired (its expiry is before this claim's time), or already ours.
    "WHERE claim.expires_at < excluded.claimed_at OR claim.owner = excluded.owner"
)
# The keys go in as one array and come back as one, whatever their number: on SQLite a JSON text
# (json_each; `WHERE true` lets SQLite read the ON CONFLICT after a SELECT), on PostgreSQL a text[].
_SQLITE_TAKE = text(_TAKE.format(keys="(SELECT value AS k FROM json_each(:keys)) WHERE true"))
_PG_TAKE = text(_TAKE.format(keys="unnest(CAST(:keys AS text[])) AS k") + " RETURNING key")
# Looked up one by one in the claim table's primary key (CROSS JOIN keeps json_each the outer
# loop): through the owner index, each chunk scanned every key the owner already held.
_SQLITE_HELD = text(
    "SELECT json_group_array(c.key) FROM json_each(:keys) AS j CROSS JOIN claim AS c ON c.key = j.value "
    "WHERE c.owner = :owner"
)
_OTHERS = {
    "sqlite": text(
        "SELECT json_group_array(c.key) FROM json_each(:keys) AS j CROSS JOIN claim AS c ON c.key = j.value "
        "WHERE c.owner != :owner AND c.expires_at >= :since"
    ),
    "postgresql": text(
        "SELECT array_agg(key) FROM claim "
        "WHERE key = ANY(CAST(:keys AS text[])) AND owner != :owner AND expires_at >= :since"
    ),
}


def _decode(found: str | list[str] | None) -> set[str]:
    if not found:
        return set()
    return set(json.loads(found) if isinstance(found, str) else found)


def _keys_of_others(conn: Connection, chunk: list[str], owner: str, since: float | None = None) -> set[str]:
    """The keys of `chunk` another owner holds (under a lease alive at `since`, when given)."""
    params = {
        "keys": key_array(conn.dialect, chunk),
        "owner": owner,
        "since": -1.0 if since is None else since,
    }
    return _decode(conn.execute(_OTHERS[conn.dialect.name], params).scalar_one())


def _mine_in_key_order(owner: str) -> Any:
    """`owner`'s keys, row-locked in key order on PostgreSQL (FOR UPDATE is dropped on SQLite).
    Claims lock their rows sorted by key; an UPDATE or DELETE by owner locks them in the table's
    order. A run releasing its leases while another claims some of the same keys (to take them
    once released) then each held a row the other waited for: a deadlock, one of them failed."""
    return select(_table.c.key).where(_table.c.owner == owner).order_by(_table.c.key).with_for_update()


def renew(engine: Engine, owner: str, lease_seconds: float) -> int:
    """Push back the expiry of every lease `owner` holds; how many it holds."""
    with engine.begin() as conn:
        result = conn.execute(
            update(_table)
            .where(_table.c.key.in_(_mine_in_key_order(owner)))
            .values(expires_at=time.time() + lease_seconds)
        )
        return int(result.rowcount)


def release_all(engine: Engine, owner: str) -> None:
    """Drop every lease of `owner`: one statement, however many keys it holds."""
    with engine.begin() as conn:
        conn.execute(delete(_table).where(_table.c.key.in_(_mine_in_key_order(owner))))


def claimed_by_others(engine: Engine, keys: Sequence[str], owner: str) -> set[str]:
    """The keys among `keys` under a live lease of another owner (to wait for, not compute)."""
    found: set[str] = set()
    now = time.time()
    with engine.connect() as conn:
        for chunk in _chunks(keys):
            found |= _keys_of_others(conn, chunk, owner, since=now)
    return found
