"""The warm actor pool, one ActorSession per workflow run.

Acquire (adopt matching replicas, replace changed ones, start the missing), wait until ready,
hand the replica URLs to the LLM layer's routing client, restart replicas that die (bounded),
and on release leave them warm for their TTL under the janitor's watch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import httpx

from nimflow._exceptions import ActorError, UserInputError
from nimflow._store import ActorReplica, Store
from nimflow.actors.display import ProgressDisplay
from nimflow.actors.environment import DEFAULT_MAX_IN_FLIGHT, ActorEnvironment
from nimflow.actors.launchers.base import Launcher, ReplicaInfo, free_port
from nimflow.actors.overrides import apply_override, parse_server_override
from nimflow.actors.ready import check_models, wait_ready
from nimflow.actors.servers import NIM, VLLM, FakeOpenAI, LocalProcess, OpenAIEndpoint, ServerSpec
from nimflow.secrets import get_secret

if TYPE_CHECKING:
    from rich.console import Console

    from nimflow.llm.context import ActorContext

__all__ = ["ActorSession", "parse_server_override"]

log = logging.getLogger("nimflow.actors")

MAX_RESTARTS = 3  # per replica per run
HEARTBEAT_SECONDS = 15.0  # must stay well under janitor.IN_USE_GRACE_SECONDS


@dataclass(eq=False)
class _Actor:
    env: ActorEnvironment
    spec: ServerSpec
    launcher: Launcher
    override: str | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    context: ActorContext | None = None
    error: BaseException | None = None
    replicas: dict[int, ReplicaInfo] = field(default_factory=dict)
    adopted: int = 0
    restarts: dict[int, int] = field(default_factory=dict)
    restart_locks: dict[int, anyio.Lock] = field(default_factory=dict)
    model: str = ""

    @property
    def keeps_warm(self) -> bool:
        return self.spec.kind in ("docker", "process") and self.env.ttl_seconds > 0


def default_launcher(spec: ServerSpec) -> Launcher:
    if isinstance(spec, NIM | VLLM):
        from nimflow.actors.launchers.docker import DockerLauncher

        return DockerLauncher()
    if isinstance(spec, LocalProcess | FakeOpenAI):
        from nimflow.actors.launchers.process import ProcessLauncher

        return ProcessLauncher()
    from nimflow.actors.launchers.endpoint import EndpointLauncher

    return EndpointLauncher()


class ActorSession:
    """Acquires each actor's replicas once per run and releases them at its end."""

    def __init__(
        self,
        store: Store,
        overrides: Mapping[str, str] | None = None,
        console: Console | None = None,
        *,
        launchers: Mapping[str, Launcher] | None = None,
    ) -> None:
        self.store = store
        self._raw_overrides = dict(overrides or {})
        self._overrides = {name: parse_server_override(spec) for name, spec in self._raw_overrides.items()}
        self._console = console
        self._launchers: dict[str, Launcher] = dict(launchers or {})
        self._actors: dict[str, _Actor] = {}
        self._http: httpx.AsyncClient | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- what the runner calls -------------------------------------------------------------------

    async def __aenter__(self) -> ActorSession:
        # The HTTP client for health checks is made on first use: a fully cached run needs none.
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Shielded: a Ctrl-C or a failed run must still stop what has no TTL and record last use.
        with anyio.CancelScope(shield=True):
            await self.release()

    def server_for(self, env: ActorEnvironment) -> ServerSpec:
        override = self._overrides.get(env.name)
        return env.server if override is None else apply_override(override, env.server)

    def identity(self, env: ActorEnvironment) -> str:
        """What serves this actor, for cache keys; starts nothing."""
        return self._actor(env).spec.identity()

    def served_by(self) -> dict[str, str]:
        return {name: self._describe(actor) for name, actor in self._actors.items()}

    async def context_for(self, env: ActorEnvironment) -> ActorContext:
        actor = self._actor(env)
        if actor.context is not None:
            return actor.context
        async with actor.lock:  # concurrent callers share the one acquisition
            if actor.error is not None:
                raise actor.error
            if actor.context is None:
                try:
                    actor.context = await self._acquire(actor)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        actor.error = exc  # later callers fail the same way instead of retrying the start
                    raise
            return actor.context

    # -- acquisition ---------------------------------------------------------------------------

    def _actor(self, env: ActorEnvironment) -> _Actor:
        actor = self._actors.get(env.name)
        if actor is None:
            spec = self.server_for(env)
            launcher = self._launchers.get(spec.kind) or self._launchers.get(type(spec).__name__)
            if env.placement is not None and spec.kind in ("docker", "process"):
                launcher = self._launchers.setdefault(f"ray:{env.placement}", env.placement.launcher())
            if launcher is None:
                launcher = self._launchers.setdefault(spec.kind, default_launcher(spec))
            actor = _Actor(env=env, spec=spec, launcher=launcher, override=self._raw_overrides.get(env.name))
            self._actors[env.name] = actor
        elif actor.env is not env and actor.env.server != env.server:
            raise UserInputError(
                f"two different actors are both named {env.name!r} ({actor.env.server!r} and "
                f"{env.server!r}); give each ActorEnvironment its own name."
            )
        return actor

    async def _acquire(self, actor: _Actor) -> ActorContext:
        from nimflow.llm.client import build_actor_context

        env, spec, launcher = actor.env, actor.spec, actor.launcher
        api_key = self._api_key(actor)
        with ProgressDisplay(self._console, env.name) as display:
            if isinstance(spec, OpenAIEndpoint):
                info = launcher.start(env.name, 0, spec, port=0, ttl=0)
                actor.replicas[0] = info
            else:
                await self._adopt_or_start(actor, display)
            actor.model = await self._check_models(actor, api_key)
            display.done(self._describe(actor))
        self._record(actor, status="in_use")
        if spec.kind != "endpoint":
            self._start_heartbeat()
            _ensure_janitor(self.store.url)
        urls = [actor.replicas[i].base_url for i in sorted(actor.replicas)]
        return build_actor_context(
            env.name,
            actor.model,
            urls,
            api_key=api_key,
            max_in_flight_per_replica=env.max_concurrency or DEFAULT_MAX_IN_FLIGHT,
            served_by=self._describe(actor),
            on_replica_down=lambda url: self._replica_down(actor, url),
            api_key_name=spec.api_key if isinstance(spec, OpenAIEndpoint) else None,
        )

    def _api_key(self, actor: _Actor) -> str | None:
        spec = actor.spec
        if isinstance(spec, OpenAIEndpoint) and spec.api_key:
            return get_secret(spec.api_key, needed_by=f"actor {actor.env.name!r}")
        return None

    async def _adopt_or_start(self, actor: _Actor, display: ProgressDisplay) -> None:
        env, spec, launcher = actor.env, actor.spec, actor.launcher
        config = spec.config_hash()
        found = await anyio.to_thread.run_sync(launcher.find, env.name)
        for info in sorted(found, key=lambda i: (i.replica, not i.running)):
            keep = (
                info.running
                and info.config_hash == config
                and info.replica < env.replica_count
                and info.replica not in actor.replicas
                and spec.kind != "fake"  # a fake server belongs to the run that started it
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
            self._forget(env.name, info.replica)

        errors: list[BaseException] = []
        started: list[ReplicaInfo] = []

        async def bring_up(index: int) -> None:
            try:
                info = actor.replicas.get(index)
                if info is None:
                    info = await self._start_one(actor, index, display)
                    started.append(info)
                await wait_ready(
                    launcher, info, spec, self._client(), progress=lambda text: display.update(index, text)
                )
                display.update(index, "ready")
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for index in range(env.replica_count):
                group.start_soon(bring_up, index)
        if errors:
            # Nothing half-started is left behind: stop every replica of this actor we know of.
            for info in list(actor.replicas.values()):
                with contextlib.suppress(Exception):
                    await anyio.to_thread.run_sync(launcher.stop, info)
                self._forget(env.name, info.replica)
            actor.replicas.clear()
            first = next((e for e in errors if isinstance(e, ActorError)), errors[0])
            raise first

    async def _start_one(
        self, actor: _Actor, index: int, display: ProgressDisplay, port: int | None = None
    ) -> ReplicaInfo:
        env, spec = actor.env, actor.spec
        if port is None:
            base = int(getattr(spec, "port", 0) or 0)
            port = base + index if base else free_port()
        display.update(index, "starting")
        info = await anyio.to_thread.run_sync(
            lambda: actor.launcher.start(
                env.name,
                index,
                spec,
                port=port,
                ttl=env.ttl_seconds,
                progress=lambda text: display.update(index, text),
            )
        )
        actor.replicas[index] = info
        # Recorded at once, so that a run killed while the server starts still leaves a row the
        # janitor will clean up.
        self._record(actor, status="in_use", only=index)
        _ensure_janitor(self.store.url)
        return info

    async def _check_models(self, actor: _Actor, api_key: str | None) -> str:
        models = [
            await check_models(info, actor.spec, self._client(), api_key=api_key)
            for info in actor.replicas.values()
        ]
        for info in actor.replicas.values():
            info.model = models[0]
        return models[0]

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False)
        return self._http

    # -- restarts ------------------------------------------------------------------------------

    async def _replica_down(self, actor: _Actor, url: str) -> str | None:
        """Called by the routing transport when a replica refuses connections: restart it, bounded."""
        wanted = url.rstrip("/")
        index = next((i for i, r in actor.replicas.items() if r.base_url.rstrip("/") == wanted), None)
        if index is None or actor.spec.kind == "endpoint":
            return None
        lock = actor.restart_locks.setdefault(index, anyio.Lock())
        async with lock:
            info = actor.replicas[index]
            if info.base_url.rstrip("/") != wanted:
                return info.base_url  # restarted meanwhile by another caller
            fresh = await anyio.to_thread.run_sync(actor.launcher.status, info)
            if fresh.running:
                with contextlib.suppress(Exception):
                    await wait_ready(actor.launcher, fresh, actor.spec, self._client(), deadline=5.0)
                    return info.base_url  # a blip, not a death
            if actor.restarts.get(index, 0) >= MAX_RESTARTS:
                log.warning(
                    "actor %s replica %s: down, and restarted %s times already",
                    actor.env.name,
                    index,
                    MAX_RESTARTS,
                )
                return None
            actor.restarts[index] = actor.restarts.get(index, 0) + 1
            log.warning("actor %s replica %s is down; restarting it", actor.env.name, index)
            try:
                await anyio.to_thread.run_sync(actor.launcher.stop, info)
                with ProgressDisplay(self._console, actor.env.name) as display:
                    new = await self._start_one(actor, index, display, port=info.port)
                    await wait_ready(actor.launcher, new, actor.spec, self._client())
                    await check_models(new, actor.spec, self._client(), api_key=self._api_key(actor))
            except Exception as exc:
                log.warning("actor %s replica %s could not be restarted: %s", actor.env.name, index, exc)
                return None
            new.model = actor.model
            self._record(actor, status="in_use", only=index)
            return new.base_url

    # -- release -------------------------------------------------------------------------------

    async def release(self) -> None:
        self._heartbeat_stop.set()
        for actor in self._actors.values():
            if actor.context is not None:
                from nimflow.llm.client import close_actor_context

                with contextlib.suppress(Exception):
                    await close_actor_context(actor.context)
            if not actor.replicas:
                continue
            if actor.spec.kind == "endpoint":  # not ours to keep warm or stop: just stop listing it
                for info in list(actor.replicas.values()):
                    self._forget(actor.env.name, info.replica)
                actor.replicas.clear()
                continue
            if actor.keeps_warm:
                self._record(actor, status="idle")
                continue
            for info in list(actor.replicas.values()):
                try:
                    await anyio.to_thread.run_sync(actor.launcher.stop, info)
                except Exception as exc:  # the janitor retries from the row left in the database
                    log.warning("actor %s: could not stop replica %s: %s", actor.env.name, info.replica, exc)
                    continue
                self._forget(actor.env.name, info.replica)
            actor.replicas.clear()
        if any(a.keeps_warm and a.replicas for a in self._actors.values()):
            _ensure_janitor(self.store.url)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- bookkeeping -----------------------------------------------------------------------------

    def _record(self, actor: _Actor, *, status: str, only: int | None = None) -> None:
        now = time.time()
        with self.store.session() as session:
            for index, info in actor.replicas.items():
                if only is not None and index != only:
                    continue
                key = f"{actor.env.name}/{index}"
                row = session.get(ActorReplica, key)
                started_at = row.started_at if row is not None and row.handle == info.handle else now
                session.merge(
                    ActorReplica(
                        id=key,
                        actor=actor.env.name,
                        replica=index,
                        kind=info.kind,
                        handle=info.handle,
                        base_url=info.base_url,
                        config_hash=info.config_hash,
                        model=actor.model or info.model,
                        ttl_seconds=actor.env.ttl_seconds if info.kind != "fake" else 0.0,
                        last_used=now,
                        started_at=started_at,
                        status=status,
                    )
                )
            session.commit()

    def _forget(self, actor: str, replica: int) -> None:
        with self.store.session() as session:
            row = session.get(ActorReplica, f"{actor}/{replica}")
            if row is not None:
                session.delete(row)
                session.commit()

    def _start_heartbeat(self) -> None:
        # While the run lasts, last_used moves forward so the janitor never stops a replica in use.
        if self._heartbeat is not None:
            return

        def beat() -> None:
            while not self._heartbeat_stop.wait(HEARTBEAT_SECONDS):
                for actor in list(self._actors.values()):
                    if actor.replicas and actor.spec.kind != "endpoint":
                        with contextlib.suppress(Exception):
                            self._record(actor, status="in_use")

        self._heartbeat = threading.Thread(target=beat, name="nimflow-actor-heartbeat", daemon=True)
        self._heartbeat.start()

    def _describe(self, actor: _Actor) -> str:
        spec = actor.spec
        text = spec.describe()
        if spec.kind in ("docker", "process"):
            n = actor.env.replica_count
            text += f", {n} replica{'s' if n != 1 else ''}"
            if actor.adopted:
                text += f" ({actor.adopted} already running)"
            if actor.launcher.kind == "ray":
                text += " on Ray"
        if actor.override:
            text += f" [--server {actor.env.name}={actor.override}]"
        return text


def _ensure_janitor(db_url: str) -> None:
    # Imported here: `python -m nimflow.actors.janitor` must not find itself already imported.
    from nimflow.actors import janitor

    janitor.ensure_running(db_url)
