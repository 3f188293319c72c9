"""The actor replica rows: the one module that reads and writes them.

The pool records what it starts or adopts (and heartbeats it while a run uses it), the janitor
forgets what it stopped, `nimflow actors ls|stop` lists and removes. All functions block (the
database): async callers go through `anyio.to_thread`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from nimflow._store import ActorReplica, Store
from nimflow._tables import ScaleEvent
from nimflow.actors.launchers.base import ReplicaInfo

__all__ = [
    "Replica",
    "forget",
    "forget_if_unchanged",
    "held_gpus",
    "is_recorded",
    "list_replicas",
    "record_scale",
    "save",
    "scale_events",
]

# The kinds whose replicas nimflow started and must stop one day (endpoints are only listed).
OWNED_KINDS = ("docker", "process", "fake", "ray")


@dataclass(frozen=True)
class Replica:
    """What a run records of one replica."""

    info: ReplicaInfo
    model: str
    ttl: float
    gpus: tuple[str, ...] = ()
    bounds: tuple[int, int] = (0, 0)  # the actor's (min, max)
    scaledown: float = 0.0


def _key(actor: str, replica: int) -> str:
    return f"{actor}/{replica}"


def save(store: Store, replicas: Iterable[Replica], *, status: str) -> None:
    """Insert or refresh rows (last_used = now); started_at is kept while the handle is the same."""
    items = list(replicas)
    try:
        _save(store, items, status)
    except IntegrityError:
        # Another process that shares these replicas inserted the row between our read and our
        # write (merge is read-then-insert): it exists now, so the second try updates it.
        _save(store, items, status)


def _save(store: Store, items: list[Replica], status: str) -> None:
    now = time.time()
    with store.session() as session:
        for item in items:
            info = item.info
            key = _key(info.actor, info.replica)
            row = session.get(ActorReplica, key)
            started_at = row.started_at if row is not None and row.handle == info.handle else now
            session.merge(
                ActorReplica(
                    id=key,
                    actor=info.actor,
                    replica=info.replica,
                    kind=info.kind,
                    handle=info.handle,
                    base_url=info.base_url,
                    config_hash=info.config_hash,
                    model=item.model or info.model,
                    ttl_seconds=item.ttl,
                    last_used=now,
                    started_at=started_at,
                    status=status,
                    gpus=",".join(item.gpus),
                    min_replicas=item.bounds[0],
                    max_replicas=item.bounds[1],
                    scaledown_seconds=item.scaledown,
                )
            )
        session.commit()


def forget(store: Store, actor: str, replica: int) -> None:
    with store.session() as session:
        row = session.get(ActorReplica, _key(actor, replica))
        if row is not None:
            session.delete(row)
            session.commit()


def is_recorded(store: Store, info: ReplicaInfo) -> bool:
    """Whether the replica's row is still there with the same handle (nobody stopped it)."""
    with store.session() as session:
        row = session.get(ActorReplica, _key(info.actor, info.replica))
        return row is not None and row.handle == info.handle


def forget_if_unchanged(store: Store, row: ActorReplica) -> None:
    """Forget a row unless somebody re-used or replaced its replica since it was read."""
    with store.session() as session:
        current = session.get(ActorReplica, row.id)
        if current is not None and current.handle == row.handle and current.last_used == row.last_used:
            session.delete(current)
            session.commit()


def list_replicas(store: Store, actor: str | None = None, *, owned_only: bool = False) -> list[ActorReplica]:
    """Rows ordered by actor and replica; `owned_only` leaves out endpoints."""
    query = select(ActorReplica).order_by(ActorReplica.actor, ActorReplica.replica)  # type: ignore[arg-type]
    if actor is not None:
        query = query.where(ActorReplica.actor == actor)
    with store.session() as session:
        rows = list(session.exec(query))
    return [r for r in rows if not owned_only or r.kind in OWNED_KINDS]


def record_scale(
    store: Store, actor: str, from_count: int, to_count: int, reason: str, *, run_id: str | None
) -> None:
    with store.session() as session:
        session.add(
            ScaleEvent(run_id=run_id, actor=actor, from_count=from_count, to_count=to_count, reason=reason)
        )
        session.commit()


def scale_events(store: Store, run_id: str) -> list[ScaleEvent]:
    """A run's scale events, oldest first."""
    query = select(ScaleEvent).where(ScaleEvent.run_id == run_id).order_by(ScaleEvent.id)  # type: ignore[arg-type]
    with store.session() as session:
        return list(session.exec(query))


def held_gpus(store: Store, *, except_actor: str | None = None) -> dict[str, str]:
    """GPU id -> the replica ("actor/i") that holds it, from the rows of warm or in-use replicas."""
    held: dict[str, str] = {}
    for row in list_replicas(store, owned_only=True):
        if row.actor == except_actor:
            continue
        for gpu in filter(None, row.gpus.split(",")):
            held[gpu] = row.id
    return held


def to_info(row: ActorReplica) -> ReplicaInfo:
    """A launcher's view of a recorded replica, to check or stop it."""
    return ReplicaInfo(
        actor=row.actor, replica=row.replica, kind=row.kind, handle=row.handle, base_url=row.base_url,
        port=0, config_hash=row.config_hash, model=row.model, ttl=row.ttl_seconds,
    )  # fmt: skip
