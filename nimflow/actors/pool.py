"""The warm actor pool, one ActorSession per workflow run.

Acquire (adopt matching replicas, replace changed ones, start the missing), wait until ready,
hand the replica URLs to the LLM layer's routing client, restart replicas that die (bounded),
and on release leave them warm for their TTL under the janitor's watch. How replicas are
started, adopted and restarted is replicas.py; an actor with replica_count=(min, max) scales
between its bounds (scaler.py). The session's background work (heartbeats, the restarts the
routing asks for, scaling) runs in its own anyio task group; blocking work (Docker, processes,
the database) goes through worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from nimflow._exceptions import SecretMissingError, UserInputError
from nimflow._resources import ActorRef
from nimflow._store import Store
from nimflow.actors import records
from nimflow.actors.actor import ActorResources, ActorState
from nimflow.actors.display import ProgressDisplay
from nimflow.actors.environment import DEFAULT_MAX_IN_FLIGHT, ActorEnvironment
from nimflow.actors.identity import serving_identity
from nimflow.actors.launchers import launcher_for
from nimflow.actors.launchers.base import ReplicaInfo, free_port
from nimflow.actors.overrides import ActorOverride, as_overrides, resolve_server
from nimflow.actors.replicas import bring_up, check_served_model, launch, restart
from nimflow.actors.servers import OpenAIEndpoint, ServerSpec
from nimflow.secrets import get_secret

if TYPE_CHECKING:
    from rich.console import Console

    from nimflow.llm.context import ActorContext
    from nimflow.llm.router import RequestRestart

__all__ = ["ActorResources", "ActorSession"]

log = logging.getLogger("nimflow.actors")

HEARTBEAT_SECONDS = 15.0  # must stay well under janitor.IN_USE_GRACE_SECONDS


class ActorSession:
    """Acquires each actor's replicas once per run and releases them at its end.

    `servers` maps an actor's name to what the command line changes about it: an ActorOverride,
    or a plain `--server` value ("fake", "endpoint:URL", "process:CMD")."""

    def __init__(
        self,
        store: Store,
        servers: Mapping[str, str | ActorOverride] | None = None,
        console: Console | None = None,
    ) -> None:
        self.store = store
        self._overrides = as_overrides(servers)
        self._console = console
        self._actors: dict[str, ActorState] = {}
        self._http: httpx.AsyncClient | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._db_lock = anyio.Lock()
        self._beating = False
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def console(self) -> Console | None:
        return self._console

    # -- the engine's protocol (nimflow._resources.ResourceSession) ------------------------------

    async def __aenter__(self) -> ActorSession:
        # The HTTP client for health checks is made on first use: a fully cached run needs none.
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._group is not None
        try:
            # Shielded: a Ctrl-C or a failed run must still stop what has no TTL and record last use.
            with anyio.CancelScope(shield=True):
                await self.release()
        finally:
            self._group.cancel_scope.cancel()
            group, self._group = self._group, None
            await group.__aexit__(None, None, None)

    async def identity(self, actor: ActorRef) -> str:
        """What answers this actor's requests, for cache keys: never where it listens."""
        state = self._actor(actor)
        if state.identity is None:
            try:
                api_key = self.api_key(state)
            except SecretMissingError:
                api_key = None  # the acquisition that follows names the missing secret
            if self._http is None and _plain_http(state.spec):
                # Over plain HTTP (or with no request at all) the identity needs no CA bundle,
                # whose loading is most of what a fully cached rerun spends on its actor; an
                # SSL context without CAs fails any TLS request instead of trusting it.
                no_cas = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                async with httpx.AsyncClient(trust_env=False, verify=no_cas) as http:
                    state.identity = await serving_identity(state.spec, http, api_key)
            else:
                state.identity = await serving_identity(state.spec, self.client(), api_key)
        return state.identity

    async def acquire(self, actor: ActorRef) -> ActorResources:
        state = self._actor(actor)
        if state.resources is not None:
            return state.resources
        state.demand += 1  # callers waiting for the actor: what an autoscaled one starts for
        try:
            async with state.lock:  # concurrent callers share the one acquisition
                if state.error is not None:
                    raise state.error
                if state.resources is None:
                    try:
                        state.resources = ActorResources(await self._acquire(state))
                    except BaseException as exc:
                        if isinstance(exc, Exception):
                            state.error = exc  # later callers fail the same way instead of retrying the start
                        if state.scaler is not None:
                            with anyio.CancelScope(shield=True):
                                await state.scaler.stop()
                        raise
                return state.resources
        finally:
            state.demand -= 1

    async def context_for(self, actor: ActorRef) -> ActorContext:
        """The acquired actor's context (what `nf.current_actor()` answers inside its tasks)."""
        return (await self.acquire(actor)).context

    def server_for(self, env: ActorEnvironment) -> ServerSpec:
        return resolve_server(env.server, self._overrides.get(env.name), env.name)

    def served_by(self) -> dict[str, str]:
        return {name: actor.describe() for name, actor in self._actors.items()}

    # -- acquisition ---------------------------------------------------------------------------

    def _actor(self, ref: ActorRef) -> ActorState:
        if not isinstance(ref, ActorEnvironment):
            raise UserInputError(f"actor {ref.name!r} is not an nf.ActorEnvironment; declare it with one.")
        env = ref
        actor = self._actors.get(env.name)
        if actor is None:
            spec = self.server_for(env)
            actor = ActorState(
                env=env,
                spec=spec,
                launcher=launcher_for(spec.kind, env.placement),
                override=self._overrides.get(env.name),
            )
            self._actors[env.name] = actor
        elif actor.env is not env and actor.env.server != env.server:
            raise UserInputError(
                f"two different actors are both named {env.name!r} ({actor.env.server!r} and "
                f"{env.server!r}); give each ActorEnvironment its own name."
            )
        return actor

    async def _acquire(self, actor: ActorState) -> ActorContext:
        from nimflow.llm.client import build_actor_context

        env, spec = actor.env, actor.spec
        api_key = self.api_key(actor)
        with ProgressDisplay(self._console, env.name) as display:
            if not spec.owned:
                info = await anyio.to_thread.run_sync(
                    lambda: actor.launcher.start(env.name, 0, spec, port=0, ttl=0)
                )
                actor.replicas[0] = info
            else:
                await launch(self, actor, display)
                if actor.scales and self._group is not None:
                    # Started now, not once the first replica is ready: the callers already waiting
                    # for the actor may justify more replicas, which then start alongside the first.
                    from nimflow._context import current_run_id
                    from nimflow.actors.scaler import Scaler

                    actor.scaler = Scaler(self, actor, current_run_id())
                    self._group.start_soon(actor.scaler.run)
                await bring_up(self, actor, display)
            actor.model = await check_served_model(self, actor, api_key)
            display.done(actor.describe())
        await self.save(actor, "in_use")
        if spec.owned:
            self._start_heartbeat()
            await _ensure_janitor(self.store.url)
        indexes = actor.first or sorted(actor.replicas)
        context = build_actor_context(
            env.name,
            actor.model,
            [actor.replicas[i].base_url for i in indexes],
            api_key=api_key,
            max_in_flight_per_replica=env.max_concurrency or DEFAULT_MAX_IN_FLIGHT,
            served_by=actor.describe(),
            on_replica_down=self._restarts(actor),
            api_key_name=spec.api_key_name if isinstance(spec, OpenAIEndpoint) else None,
            request_timeout=actor.request_timeout,
            max_replicas=actor.bounds[1] if actor.scales else None,
            replica_indexes=indexes,
        )
        if actor.scaler is not None and context.router is not None:
            actor.scaler.attach(context.router)
        return context

    def _restarts(self, actor: ActorState) -> RequestRestart | None:
        """How the routing asks for a restart of a replica that refuses connections: a task of the
        session's group per request. Only replicas the session started can be restarted."""
        from nimflow.llm.router import restarts_in

        if self._group is None or not actor.spec.owned:
            return None

        async def restart_replica(url: str) -> str | None:
            return await restart(self, actor, url)

        return restarts_in(self._group, restart_replica)

    def api_key(self, actor: ActorState) -> str | None:
        spec = actor.spec
        if isinstance(spec, OpenAIEndpoint) and spec.api_key_name:
            return get_secret(spec.api_key_name, needed_by=f"actor {actor.env.name!r}")
        return None

    async def start_one(
        self,
        actor: ActorState,
        index: int,
        display: ProgressDisplay,
        *,
        port: int | None = None,
        gpus: tuple[str, ...] = (),
    ) -> ReplicaInfo:
        """Start one replica (not yet ready) and record it."""
        env, spec = actor.env, actor.spec
        if port is None:
            base = spec.base_port()
            port = base + index if base else free_port()
        display.update(index, "starting")
        info = await anyio.to_thread.run_sync(
            lambda: actor.launcher.start(
                env.name, index, spec, port=port, ttl=env.ttl_seconds, gpus=gpus,
                progress=lambda text: display.update(index, text),
            )
        )  # fmt: skip
        actor.replicas[index] = info
        # Recorded at once, so that a run killed while the server starts still leaves a row the
        # janitor will clean up (and its GPUs are seen as held by the next run).
        await self.save(actor, "in_use", only=index)
        await _ensure_janitor(self.store.url)
        return info

    def client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False)
        return self._http

    # -- release -------------------------------------------------------------------------------

    async def release(self) -> None:
        async with self._db_lock:
            self._closing = True  # the heartbeat writes nothing after this
        for actor in self._actors.values():
            if actor.scaler is not None:  # no scaling while the replicas are handed to the janitor
                await actor.scaler.stop()
        for actor in self._actors.values():
            if actor.resources is not None:
                from nimflow.llm.client import close_actor_context

                with contextlib.suppress(Exception):
                    await close_actor_context(actor.resources.context)
            if not actor.replicas:
                continue
            if not actor.spec.owned:  # not ours to keep warm or stop: just stop listing it
                for info in list(actor.replicas.values()):
                    await self.forget(actor.env.name, info.replica)
                actor.replicas.clear()
                continue
            if actor.keeps_warm:
                await self.save(actor, "idle", force=True)
                continue
            for info in list(actor.replicas.values()):
                try:
                    await anyio.to_thread.run_sync(actor.launcher.stop, info)
                except Exception as exc:  # the janitor retries from the row left in the database
                    log.warning("actor %s: could not stop replica %s: %s", actor.env.name, info.replica, exc)
                    continue
                await self.forget(actor.env.name, info.replica)
            actor.replicas.clear()
        if any(a.keeps_warm and a.replicas for a in self._actors.values()):
            await _ensure_janitor(self.store.url)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- bookkeeping -----------------------------------------------------------------------------

    async def save(
        self, actor: ActorState, status: str, *, only: int | None = None, force: bool = False
    ) -> None:
        rows = actor.rows(only)
        if not rows:
            return
        async with self._db_lock:
            if self._closing and not force:
                return
            await anyio.to_thread.run_sync(lambda: records.save(self.store, rows, status=status))

    async def forget(self, actor: str, replica: int) -> None:
        await anyio.to_thread.run_sync(records.forget, self.store, actor, replica)

    def _start_heartbeat(self) -> None:
        # While the run lasts, last_used moves forward so the janitor never stops a replica in use.
        if self._beating or self._group is None:
            return
        self._beating = True
        self._group.start_soon(self._heartbeat)

    async def _heartbeat(self) -> None:
        while not self._closing:
            await anyio.sleep(HEARTBEAT_SECONDS)
            for actor in list(self._actors.values()):
                if actor.replicas and actor.spec.owned:
                    try:
                        await self.save(actor, "in_use")
                    except Exception as exc:  # a busy database: the next beat tries again
                        log.warning("actor %s: heartbeat not recorded: %s", actor.env.name, exc)


async def _ensure_janitor(db_url: str) -> None:
    # Imported here: `python -m nimflow.actors.janitor` must not find itself already imported.
    from nimflow.actors import janitor

    await anyio.to_thread.run_sync(janitor.ensure_running, db_url)


def _plain_http(spec: ServerSpec) -> bool:
    """Whether naming what serves `spec` sends nothing, or only a request over plain HTTP."""
    return not isinstance(spec, OpenAIEndpoint) or bool(spec.model) or spec.base_url.startswith("http://")
