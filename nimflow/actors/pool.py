"""The warm actor pool, one ActorSession per workflow run.

Acquire (adopt matching replicas, replace changed ones, start the missing), wait until ready,
hand the replica URLs to the LLM layer's routing client, restart replicas that die (bounded),
and on release leave them warm for their TTL under the janitor's watch. An actor with
replica_count=(min, max) scales between its bounds (scaler.py). The session's background work
(heartbeats, restarts, scaling) runs in its own anyio task group; blocking work (Docker,
processes, the database) goes through worker threads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from nimflow._exceptions import ActorError, SecretMissingError, UserInputError
from nimflow._resources import ActorRef
from nimflow._store import Store
from nimflow.actors import records
from nimflow.actors.actor import ActorResources, ActorState
from nimflow.actors.display import ProgressDisplay
from nimflow.actors.environment import DEFAULT_MAX_IN_FLIGHT, ActorEnvironment
from nimflow.actors.identity import serving_identity
from nimflow.actors.launchers import launcher_for
from nimflow.actors.launchers.base import ReplicaInfo, free_port
from nimflow.actors.locks import start_lock
from nimflow.actors.overrides import ActorOverride, as_overrides, resolve_server
from nimflow.actors.ready import check_models, wait_ready
from nimflow.actors.servers import OpenAIEndpoint, ServerSpec
from nimflow.secrets import get_secret

if TYPE_CHECKING:
    from rich.console import Console

    from nimflow.llm.context import ActorContext

__all__ = ["ActorResources", "ActorSession"]

log = logging.getLogger("nimflow.actors")

MAX_RESTARTS = 3  # per replica per run
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
                api_key = self._api_key(state)
            except SecretMissingError:
                api_key = None  # the acquisition that follows names the missing secret
            state.identity = await serving_identity(state.spec, self._client(), api_key)
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
        api_key = self._api_key(actor)
        with ProgressDisplay(self._console, env.name) as display:
            if not spec.owned:
                info = await anyio.to_thread.run_sync(
                    lambda: actor.launcher.start(env.name, 0, spec, port=0, ttl=0)
                )
                actor.replicas[0] = info
            else:
                await self._adopt_or_start(actor, display)
            actor.model = await self._check_models(actor, api_key)
            display.done(actor.describe())
        await self._save(actor, "in_use")
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
            on_replica_down=lambda url: self._replica_down(actor, url),
            api_key_name=spec.api_key_name if isinstance(spec, OpenAIEndpoint) else None,
            request_timeout=actor.request_timeout,
            max_replicas=actor.bounds[1] if actor.scales else None,
            replica_indexes=indexes,
        )
        if actor.scaler is not None and context.router is not None:
            actor.scaler.attach(context.router)
        return context

    def _api_key(self, actor: ActorState) -> str | None:
        spec = actor.spec
        if isinstance(spec, OpenAIEndpoint) and spec.api_key_name:
            return get_secret(spec.api_key_name, needed_by=f"actor {actor.env.name!r}")
        return None

    async def _adopt_or_start(self, actor: ActorState, display: ProgressDisplay) -> None:
        # One critical section per home across processes: a second run waits here for the first
        # to start the replicas, then adopts them instead of starting its own.
        async with start_lock(actor.env.name, wait=actor.spec.startup_timeout + 600):
            await self._launch(actor, display)
        actor.first = sorted(actor.replicas)  # what this acquisition brings up and waits for
        if actor.scales and self._group is not None:
            # Started now, not once the first replica is ready: the callers already waiting for
            # the actor may justify more replicas, which then start alongside the first.
            from nimflow._context import current_run_id
            from nimflow.actors.scaler import Scaler

            actor.scaler = Scaler(self, actor, current_run_id())
            self._group.start_soon(actor.scaler.run)

        errors: list[BaseException] = []

        async def bring_up(index: int) -> None:
            try:
                info = actor.replicas[index]
                await wait_ready(
                    actor.launcher, info, actor.spec, self._client(),
                    progress=lambda text: display.update(index, text),
                )  # fmt: skip
                display.update(index, "ready")
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for index in actor.first:
                group.start_soon(bring_up, index)
        if errors:
            await self._fail_start(actor, errors)

    async def _launch(self, actor: ActorState, display: ProgressDisplay) -> None:
        """Adopt what matches, remove what does not, start the missing replicas (not yet ready)."""
        env, spec, launcher = actor.env, actor.spec, actor.launcher
        low, high = actor.bounds
        config = spec.config_hash()
        found = await anyio.to_thread.run_sync(launcher.find, env.name)
        for info in sorted(found, key=lambda i: (i.replica, not i.running)):
            keep = (
                spec.shared
                and info.running
                and info.config_hash == config
                and info.replica < high  # adopted replicas count toward the bounds
                and info.replica not in actor.replicas
            )
            if keep:
                actor.replicas[info.replica] = info
                actor.adopted += 1
                display.update(info.replica, "adopting the running replica")
                continue
            reason = "its config changed" if info.config_hash != config else "it is not needed or not running"
            display.update(info.replica, f"replacing the old replica ({reason})")
            log.info("actor %s: removing replica %s (%s)", env.name, info.replica, reason)
            await anyio.to_thread.run_sync(launcher.stop, info)
            await self._forget(env.name, info.replica)
        await self._save(actor, "in_use")  # adopted replicas hold their GPUs before placement
        # At least one: acquisition means a request needs the actor, also for min=0.
        wanted = max(low, 1) - len(actor.replicas)
        missing = [i for i in range(high) if i not in actor.replicas][: max(wanted, 0)]
        gpus = await anyio.to_thread.run_sync(actor.gpus_for, self.store, missing)
        errors: list[BaseException] = []

        async def start(index: int) -> None:
            try:
                await self._start_one(actor, index, display, gpus=gpus.get(index, ()))
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for index in missing:
                group.start_soon(start, index)
        if errors:
            await self._fail_start(actor, errors)

    async def _fail_start(self, actor: ActorState, errors: list[BaseException]) -> NoReturn:
        """Nothing half-started is left behind: stop every replica of this actor we know of."""
        for info in list(actor.replicas.values()):
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(actor.launcher.stop, info)
            await self._forget(actor.env.name, info.replica)
        actor.replicas.clear()
        raise next((e for e in errors if isinstance(e, ActorError)), errors[0])

    async def _start_one(
        self,
        actor: ActorState,
        index: int,
        display: ProgressDisplay,
        *,
        port: int | None = None,
        gpus: tuple[str, ...] = (),
    ) -> ReplicaInfo:
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
        await self._save(actor, "in_use", only=index)
        await _ensure_janitor(self.store.url)
        return info

    async def _check_models(self, actor: ActorState, api_key: str | None) -> str:
        models = [
            await check_models(actor.replicas[i], actor.spec, self._client(), api_key=api_key)
            for i in actor.first or sorted(actor.replicas)
        ]
        for info in actor.replicas.values():
            info.model = models[0]
        return models[0]

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False)
        return self._http

    # -- restarts: tasks of the session's group --------------------------------------------------

    async def _replica_down(self, actor: ActorState, url: str) -> str | None:
        """Called by the routing transport when a replica refuses connections: restart it, bounded."""
        if self._group is None or not actor.spec.owned:
            return None
        result: list[str | None] = []
        finished = anyio.Event()

        async def job() -> None:
            try:
                result.append(await self._restart(actor, url))
            except Exception as exc:
                log.warning("actor %s: restart failed: %s", actor.env.name, exc)
            finally:
                finished.set()

        self._group.start_soon(job)
        await finished.wait()
        return result[0] if result else None

    async def _restart(self, actor: ActorState, url: str) -> str | None:
        wanted = url.rstrip("/")
        index = next((i for i, r in actor.replicas.items() if r.base_url.rstrip("/") == wanted), None)
        if index is None:
            return None
        async with actor.restart_locks.setdefault(index, anyio.Lock()):
            info = actor.replicas[index]
            if info.base_url.rstrip("/") != wanted:
                return info.base_url  # restarted meanwhile by another caller
            fresh = await anyio.to_thread.run_sync(actor.launcher.status, info)
            if fresh.running:
                with contextlib.suppress(Exception):
                    await wait_ready(actor.launcher, fresh, actor.spec, self._client(), deadline=5.0)
                    return info.base_url  # a blip, not a death
            if not await anyio.to_thread.run_sync(lambda: records.is_recorded(self.store, info)):
                actor.replicas.pop(index, None)  # scaled down by another process: not ours to restart
                return None
            if actor.restarts.get(index, 0) >= MAX_RESTARTS:
                log.warning(
                    "actor %s replica %s: down, and restarted %s times already",
                    actor.env.name, index, MAX_RESTARTS,
                )  # fmt: skip
                return None
            actor.restarts[index] = actor.restarts.get(index, 0) + 1
            log.warning("actor %s replica %s is down; restarting it", actor.env.name, index)
            try:
                await anyio.to_thread.run_sync(actor.launcher.stop, info)
                with ProgressDisplay(self._console, actor.env.name) as display:
                    new = await self._start_one(actor, index, display, port=info.port, gpus=info.gpus)
                    await wait_ready(actor.launcher, new, actor.spec, self._client())
                    await check_models(new, actor.spec, self._client(), api_key=self._api_key(actor))
            except Exception as exc:
                log.warning("actor %s replica %s could not be restarted: %s", actor.env.name, index, exc)
                return None
            new.model = actor.model
            await self._save(actor, "in_use", only=index)
            return new.base_url

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
                    await self._forget(actor.env.name, info.replica)
                actor.replicas.clear()
                continue
            if actor.keeps_warm:
                await self._save(actor, "idle", force=True)
                continue
            for info in list(actor.replicas.values()):
                try:
                    await anyio.to_thread.run_sync(actor.launcher.stop, info)
                except Exception as exc:  # the janitor retries from the row left in the database
                    log.warning("actor %s: could not stop replica %s: %s", actor.env.name, info.replica, exc)
                    continue
                await self._forget(actor.env.name, info.replica)
            actor.replicas.clear()
        if any(a.keeps_warm and a.replicas for a in self._actors.values()):
            await _ensure_janitor(self.store.url)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- bookkeeping -----------------------------------------------------------------------------

    async def _save(
        self, actor: ActorState, status: str, *, only: int | None = None, force: bool = False
    ) -> None:
        rows = actor.rows(only)
        if not rows:
            return
        async with self._db_lock:
            if self._closing and not force:
                return
            await anyio.to_thread.run_sync(lambda: records.save(self.store, rows, status=status))

    async def _forget(self, actor: str, replica: int) -> None:
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
                        await self._save(actor, "in_use")
                    except Exception as exc:  # a busy database: the next beat tries again
                        log.warning("actor %s: heartbeat not recorded: %s", actor.env.name, exc)


async def _ensure_janitor(db_url: str) -> None:
    # Imported here: `python -m nimflow.actors.janitor` must not find itself already imported.
    from nimflow.actors import janitor

    await anyio.to_thread.run_sync(janitor.ensure_running, db_url)
