"""Bringing an actor's replicas up for an ActorSession, and back up when one dies.

Adopt the running replicas whose config matches, remove the others, start the missing ones (under
the cross-process start lock), wait until each is ready and serves the expected model. A replica
that refuses connections during the run is restarted in place, at most MAX_RESTARTS times. Nothing
half-started is left behind when a start fails.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, NoReturn

import anyio
import anyio.to_thread

from nimflow._exceptions import ActorError
from nimflow.actors import records
from nimflow.actors.display import ProgressDisplay
from nimflow.actors.locks import start_lock
from nimflow.actors.ready import check_models, wait_ready

if TYPE_CHECKING:
    from nimflow.actors.actor import ActorState
    from nimflow.actors.pool import ActorSession

__all__ = ["MAX_RESTARTS", "bring_up", "check_served_model", "launch", "restart"]

log = logging.getLogger("nimflow.actors")

MAX_RESTARTS = 3  # per replica per run


async def launch(session: ActorSession, actor: ActorState, display: ProgressDisplay) -> None:
    """Adopt what matches, remove what does not, start the missing replicas (not yet ready).

    One critical section per home across processes: a second run waits here for the first to
    start the replicas, then adopts them instead of starting its own."""
    env, spec, launcher = actor.env, actor.spec, actor.launcher
    async with start_lock(env.name, wait=spec.startup_timeout + 600):
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
            await session.forget(env.name, info.replica)
        await session.save(actor, "in_use")  # adopted replicas hold their GPUs before placement
        # At least one: acquisition means a request needs the actor, also for min=0.
        wanted = max(low, 1) - len(actor.replicas)
        missing = [i for i in range(high) if i not in actor.replicas][: max(wanted, 0)]
        gpus = await anyio.to_thread.run_sync(actor.gpus_for, session.store, missing)
        errors: list[BaseException] = []

        async def start(index: int) -> None:
            try:
                await session.start_one(actor, index, display, gpus=gpus.get(index, ()))
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for index in missing:
                group.start_soon(start, index)
        if errors:
            await fail_start(session, actor, errors)
    actor.first = sorted(actor.replicas)  # what this acquisition brings up and waits for


async def bring_up(session: ActorSession, actor: ActorState, display: ProgressDisplay) -> None:
    """Wait until every replica of this acquisition is ready (all of them at once)."""
    errors: list[BaseException] = []

    async def ready(index: int) -> None:
        try:
            info = actor.replicas[index]
            await wait_ready(
                actor.launcher, info, actor.spec, session.client(),
                progress=lambda text: display.update(index, text),
            )  # fmt: skip
            display.update(index, "ready")
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for index in actor.first:
            group.start_soon(ready, index)
    if errors:
        await fail_start(session, actor, errors)


async def fail_start(session: ActorSession, actor: ActorState, errors: list[BaseException]) -> NoReturn:
    """Nothing half-started is left behind: stop every replica of this actor we know of."""
    for info in list(actor.replicas.values()):
        with contextlib.suppress(Exception):
            await anyio.to_thread.run_sync(actor.launcher.stop, info)
        await session.forget(actor.env.name, info.replica)
    actor.replicas.clear()
    raise next((e for e in errors if isinstance(e, ActorError)), errors[0])


async def check_served_model(session: ActorSession, actor: ActorState, api_key: str | None) -> str:
    """The model the replicas serve (checked on each of this acquisition's replicas)."""
    models = [
        await check_models(actor.replicas[i], actor.spec, session.client(), api_key=api_key)
        for i in actor.first or sorted(actor.replicas)
    ]
    for info in actor.replicas.values():
        info.model = models[0]
    return models[0]


async def restart(session: ActorSession, actor: ActorState, url: str) -> str | None:
    """Restart the replica that refused connections at `url`, bounded: its new base URL, or None
    to leave it out of rotation (restarted too often, scaled down elsewhere, or it failed)."""
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
                await wait_ready(actor.launcher, fresh, actor.spec, session.client(), deadline=5.0)
                return info.base_url  # a blip, not a death
        if not await anyio.to_thread.run_sync(lambda: records.is_recorded(session.store, info)):
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
            with ProgressDisplay(session.console, actor.env.name) as display:
                new = await session.start_one(actor, index, display, port=info.port, gpus=info.gpus)
                await wait_ready(actor.launcher, new, actor.spec, session.client())
                await check_models(new, actor.spec, session.client(), api_key=session.api_key(actor))
        except Exception as exc:
            log.warning("actor %s replica %s could not be restarted: %s", actor.env.name, index, exc)
            return None
        new.model = actor.model
        await session.save(actor, "in_use", only=index)
        return new.base_url
