"""The cache component of a run: keys the calls of a node, looks them up, replays the hits,
stores new results. It talks to the database only through the Store's cache and claim methods
(`Store.cached`, `Store.writer.upsert`, `Store.claim`/`renew`/`release_all`), and to actors only
through `ResourceSession.identity`.

Claims make cooperating processes on one database compute each key once: before computing, a run
takes a lease on the keys of a chunk of items (one statement per chunk), renews its leases from the
run's heartbeat, and gives them up once what it computed is committed. Keys leased by another live
run are left for last, then waited for in the cache, or taken over once their lease expires."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread

from nimflow import _serialize
from nimflow._cache import cache_key
from nimflow._exceptions import SerializationError
from nimflow._graph import Node
from nimflow._resources import ResourceSession
from nimflow._store import Cached, CacheEntry, Store
from nimflow._task import TaskSpec

__all__ = ["ResultCache", "encoder"]

log = logging.getLogger("nimflow")

DEFAULT_LEASE_SECONDS = 30.0


def lease_seconds() -> float:
    """How long a claim lives without a renewal: how soon a dead claimer's items are taken over."""
    return float(os.environ.get("NIMFLOW_CLAIM_LEASE_SECONDS") or DEFAULT_LEASE_SECONDS)


class ResultCache:
    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        read: bool,
        resources: ResourceSession | None,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._writer = store.writer
        self._run_id = run_id
        self._read = read  # False for --no-cache: compute everything, store it anew
        self._resources = resources
        self._warned_source: set[str] = set()
        self.owner = owner or run_id  # who holds this process's claims
        self.lease = lease_seconds()
        # Whether this process holds leases not yet released (release_all drops them by owner, so
        # the keys themselves need not be kept: a 100,000-item map's would be 15 MB).
        self._holding = False

    # -- claims ---------------------------------------------------------------------------------

    @property
    def claims(self) -> bool:
        """Whether this run claims keys: not with --no-cache, which recomputes everything anyway."""
        return self._read

    def take(self, keys: Sequence[str]) -> tuple[set[str], int]:
        """Claim `keys` (blocking: called per chunk of items). The keys this process should compute:
        those it now holds that are still not in the cache (another run may have stored them
        between our lookup and our claim); and how many of them it took over from another run's
        expired lease."""
        taken, over = self._store.claim(keys, self.owner, self.lease)
        self._holding |= bool(taken)
        if taken:
            taken -= set(self._store.cached(list(taken)))
        return taken, len(over & taken)

    def renew(self) -> None:
        """Push back the expiry of this process's leases (from the run's heartbeat)."""
        if self._holding:
            self._store.renew(self.owner, self.lease)

    async def keep_claims(self) -> None:
        """Renew this process's leases three times per lease, so one late beat loses nothing (a
        task in the run's task group, for the run's duration)."""
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                await anyio.to_thread.run_sync(self.renew)
            except Exception as exc:  # a database hiccup: the next beat tries again
                log.warning("could not renew claims: %s", exc)

    def release(self) -> None:
        """Give up every lease held, once what was computed under them is committed (blocking)."""
        if not self._holding:
            return
        self._store.flush()  # the results first: a key must never be free and absent from the cache
        self._holding = False
        self._store.release_all(self.owner)  # every key held is released: one statement

    async def keys(self, node: Node[TaskSpec[..., Any]], calls: Sequence[dict[str, Any]]) -> list[str] | None:
        """The cache key of each call of the node; None when its task is not cached."""
        spec = node.task
        if not spec.cache or not calls:
            return None
        served_by = None
        if spec.actor is not None and self._resources is not None:
            served_by = await self._resources.identity(spec.actor)
        # Inputs that are not mapped are the same for every call: serialize them once.
        keyed = [name for name in calls[0] if name not in spec.cache_ignore]
        constant = {
            name: self._jsonable(spec, name, calls[0][name]) for name in keyed if name not in node.mapped
        }
        varying = [name for name in keyed if name in node.mapped]
        return [
            cache_key(
                spec.name,
                spec.cache_version,
                {**constant, **{name: self._jsonable(spec, name, kwargs[name]) for name in varying}},
                served_by,
            )
            for kwargs in calls
        ]

    async def lookup(self, keys: Sequence[str]) -> dict[str, Cached]:
        """The entries found for these keys (none with --no-cache)."""
        if not self._read or not keys:
            return {}
        return await anyio.to_thread.run_sync(self._store.cached, list(keys))

    def replay(self, spec: TaskSpec[..., Any], entry: Cached) -> Any:
        """A hit's value; warns once per task when its source changed under the same cache_version."""
        if entry.source_hash != spec.source_hash and spec.name not in self._warned_source:
            self._warned_source.add(spec.name)
            log.warning(
                "task %s: its source changed since these results were cached under cache_version %r; "
                "they are reused. Bump cache_version (or run with --no-cache) to recompute.",
                spec.name,
                spec.cache_version,
            )
        return _serialize.loads(entry.output, spec.return_hint, f"{spec.name}: cached output")

    def save(self, spec: TaskSpec[..., Any], key: str, output_json: str) -> None:
        self._writer.upsert(
            CacheEntry,
            {
                "key": key,
                "task": spec.name,
                "cache_version": spec.cache_version,
                "source_hash": spec.source_hash,
                "output": output_json,
                "created_at": time.time(),
                "run_id": self._run_id,
            },
        )

    @staticmethod
    def _jsonable(spec: TaskSpec[..., Any], name: str, value: Any) -> Any:
        return _serialize.to_jsonable(value, spec.input_hints[name], f"{spec.name}: input {name!r}")


def encoder(spec: TaskSpec[..., Any]) -> Callable[[Any], str] | None:
    """For a cached task, the function that turns a returned value into the JSON the cache
    stores, refusing a value that does not fit the return hint (it is never cached)."""
    if not spec.cache:
        return None
    adapter = _serialize.adapter(spec.return_hint)

    def encode(value: Any) -> str:
        try:
            return adapter.dump_json(value, warnings="error").decode()
        except Exception as exc:
            raise SerializationError(
                f"{spec.name}: its return value does not match the return hint "
                f"{_serialize.type_name(spec.return_hint)} and is not cached ({_first_line(exc)}). "
                "Fix the hint or the value."
            ) from exc

    return encode


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
