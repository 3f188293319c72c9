"""The janitor: a small detached process that stops replicas whose TTL has passed.

An autoscaled actor's replicas beyond its min (the highest numbers) are extras: once its runs
have ended they are stopped after scaledown_seconds idle, the last min after ttl_seconds.

It runs even when no nimflow process does. One instance per NIMFLOW_HOME (an flock on
janitor.lock); it exits once nothing is left to watch, and nimflow starts it again when it leaves
a replica warm. A replica in use (its run heartbeats `last_used`) is given at least
IN_USE_GRACE_SECONDS, so a run that was kill -9'd still has its servers stopped.

    python -m nimflow.actors.janitor [--once]
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nimflow import _config
from nimflow.actors import records
from nimflow.actors.launchers import launcher_for

if TYPE_CHECKING:
    from nimflow._store import ActorReplica, Store
    from nimflow.actors.launchers.base import Launcher

__all__ = ["IN_USE_GRACE_SECONDS", "ensure_running", "expires_at", "stop_row", "sweep"]

log = logging.getLogger("nimflow.actors.janitor")

IN_USE_GRACE_SECONDS = 60.0
MAX_SLEEP = 5.0  # a run that ends turns in-use replicas idle: notice it soon
MAX_LIFETIME = 30 * 24 * 3600.0  # a bound on the loop, far past any sensible TTL
LOCK_WAIT = 2.0  # a janitor that is just exiting still holds the lock for a moment


def expires_at(last_used: float, ttl: float, status: str) -> float:
    if status == "in_use":
        return last_used + max(ttl, IN_USE_GRACE_SECONDS)
    return last_used + ttl


def _lock_path() -> Path:
    return _config.home() / "janitor.lock"


@contextlib.contextmanager
def _single_instance(wait: float) -> Iterator[bool]:
    with open(_lock_path(), "a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep(store: Store, now: float | None = None) -> float | None:
    """Stop expired replicas and forget vanished ones (once no live run uses them); the next expiry
    time, or None if none is left."""
    now = time.time() if now is None else now
    next_expiry: float | None = None
    launchers: dict[str, Launcher] = {}
    rows = records.list_replicas(store, owned_only=True)
    keep_for = _warm_seconds(rows)
    for row in rows:
        info = records.to_info(row)
        launcher = launchers.get(row.kind) or launchers.setdefault(row.kind, launcher_for(row.kind))
        try:
            gone = not launcher.status(info).running
            expiry = expires_at(row.last_used, keep_for[row.id], row.status)
            # A dead replica still in use by a live run is left to that run, which restarts it
            # (forgetting it here would read there as "scaled down by another process").
            if now < expiry and (not gone or row.status == "in_use"):
                next_expiry = expiry if next_expiry is None else min(next_expiry, expiry)
                continue
            if not gone:
                log.info("stopping %s (TTL passed)", row.id)
                launcher.stop(info)
        except Exception as exc:  # engine down, permission: try again next round
            log.warning("cannot check or stop %s: %s", row.id, exc)
            retry = now + MAX_SLEEP
            next_expiry = retry if next_expiry is None else min(next_expiry, retry)
            continue
        records.forget_if_unchanged(store, row)
    return next_expiry


def _warm_seconds(rows: list[ActorReplica]) -> dict[str, float]:
    """How long each replica stays warm after last use: the TTL, or for an autoscaled actor's
    extras (beyond its first min_replicas, in replica order) the shorter scaledown_seconds."""
    seconds: dict[str, float] = {}
    rank: dict[str, int] = {}
    for row in rows:  # ordered by actor and replica
        n = rank.get(row.actor, 0)
        rank[row.actor] = n + 1
        extra = row.max_replicas > row.min_replicas and n >= row.min_replicas and row.scaledown_seconds > 0
        seconds[row.id] = min(row.ttl_seconds, row.scaledown_seconds) if extra else row.ttl_seconds
    return seconds


def stop_row(store: Store, row: ActorReplica) -> None:
    """Stop one recorded replica now and forget it (for `nimflow actors stop`)."""
    launcher_for(row.kind).stop(records.to_info(row))
    records.forget(store, row.actor, row.replica)


def _has_rows(store: Store) -> bool:
    return bool(records.list_replicas(store, owned_only=True))


def run(once: bool = False) -> int:
    from nimflow._store import Store

    store = Store.open()
    started = time.monotonic()
    try:
        for _ in range(10_000):  # re-acquisitions, see below
            with _single_instance(LOCK_WAIT) as owner:
                if not owner:
                    return 0  # another janitor watches this home
                while time.monotonic() - started < MAX_LIFETIME:
                    next_expiry = sweep(store)
                    if next_expiry is None or once:
                        break
                    time.sleep(min(MAX_SLEEP, max(0.2, next_expiry - time.time() + 0.05)))
            # A run may have recorded a replica after the last sweep and, seeing the lock held,
            # started no janitor: look once more now that the lock is free.
            if once or not _has_rows(store):
                return 0
    finally:
        store.close()
    return 0


def is_running() -> bool:
    """Whether a janitor holds this NIMFLOW_HOME's lock."""
    path = _lock_path()
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def ensure_running(db_url: str | None = None) -> None:
    """Start a detached janitor for this NIMFLOW_HOME unless one holds the lock already."""
    if is_running():
        return  # it re-reads the replicas before it exits
    home = _config.home()
    env = dict(os.environ)
    env["NIMFLOW_HOME"] = str(home)
    if db_url:
        env["NIMFLOW_DB_URL"] = db_url
    from nimflow.actors.launchers.detach import spawn_detached

    # Detached: the janitor outlives this process and is nobody's child to reap.
    spawn_detached([sys.executable, "-m", "nimflow.actors.janitor"], log=home / "janitor.log", env=env)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s janitor[%(process)d] %(message)s")
    return run(once="--once" in args)


if __name__ == "__main__":
    sys.exit(main())
