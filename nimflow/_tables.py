"""nimflow's own tables. Their schema is owned by the migrations in nimflow/migrations (revision
0001 is the schema of 0.1, 0002 adds hosts, heartbeats and claims, 0003 replica GPUs, 0004 replica
bounds and scale events, 0005 claim counts); a change here needs a new
revision there."""

from __future__ import annotations

import os
import socket
import time
from typing import NamedTuple

from sqlmodel import Field, SQLModel


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
    heartbeat_at: float | None = None  # written while the run is alive; a stale one means it died
    host: str | None = None


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
    # On a node row: items another run computed while this one waited, and items taken over from
    # a run that let them go (it died), out of those it found claimed.
    waited: int = 0
    taken_over: int = 0
    # Who ran (or recorded) the item; filled on insert, so every writer of task runs gets it.
    # Constants, not callables: a callable default costs a Python call per row of every batch.
    host: str | None = Field(default=None, sa_column_kwargs={"default": socket.gethostname()})
    pid: int | None = Field(default=None, sa_column_kwargs={"default": os.getpid()})


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
    run_id: str | None = None  # the run that computed it


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
    gpus: str = ""  # comma-separated device ids the replica holds
    # The actor's bounds when it was recorded (0 = unknown, an older row): the janitor stops the
    # replicas beyond min_replicas after scaledown_seconds idle, the last min after ttl_seconds.
    min_replicas: int = 0
    max_replicas: int = 0
    scaledown_seconds: float = 0.0


class ScaleEvent(SQLModel, table=True):
    """An actor's replica count changed: when, from -> to, why (for `nimflow show RUN`)."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    actor: str
    at: float = Field(default_factory=time.time)
    from_count: int
    to_count: int
    reason: str


class Claim(SQLModel, table=True):
    """A lease on a cache key being computed, so cooperating processes compute each item once."""

    key: str = Field(primary_key=True)
    owner: str = Field(index=True)
    expires_at: float = Field(index=True)
    claimed_at: float = Field(default_factory=time.time)


OWN_TABLES = frozenset({"run", "taskrun", "cacheentry", "actorreplica", "claim", "scaleevent"})


def _refresh_pid() -> None:  # a forked child records its own pid
    TaskRun.__table__.c.pid.default.arg = os.getpid()  # type: ignore[attr-defined]


os.register_at_fork(after_in_child=_refresh_pid)
