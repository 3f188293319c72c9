"""`nimflow serve`: start launch plans on their schedules and triggers, until stopped.

Each loop reads the plans' state (so `launchplans deactivate` takes effect at once), claims the
ticks and artifact versions that are due by inserting their launch rows, and starts each claimed
launch as a run in this process, on its own task of one anyio task group. Runs share the store
and the warm actor pool (replicas stay up between launches and are adopted by the next one).
A failed run is logged and recorded; the scheduler goes on. Cancelling the group (Ctrl-C,
SIGTERM) cancels the runs in progress, which record themselves as cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from nimflow._exceptions import NimflowError, RunFailedError, UserInputError
from nimflow._launchplans import (
    LaunchPlan,
    LaunchPlanState,
    OnArtifact,
    claim,
    last_planned,
    pending_versions,
    register,
    states,
    update_launch,
)
from nimflow._store import Store

if TYPE_CHECKING:
    from rich.console import Console

    from nimflow.actors.overrides import ActorOverride

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        plans: Sequence[LaunchPlan],
        store: Store,
        *,
        files: Mapping[str, str] | None = None,  # plan name -> file, for the run rows
        servers: Mapping[str, str | ActorOverride] | None = None,
        console: Console | None = None,
        poll_seconds: float = 0.25,
    ) -> None:
        names = [p.name for p in plans]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UserInputError(f"several launch plans are named {duplicates}; give each its own name.")
        if not plans:
            raise UserInputError("no launch plans to serve: declare nf.LaunchPlan(...) in the files given.")
        self.plans = list(plans)
        self.store = store
        self.files = dict(files or {})
        # --server overrides apply to the plans whose workflows use that actor.
        self.actors = {p.name: _actors_of(p) for p in self.plans}
        used = set().union(*self.actors.values())
        unused = sorted(set(servers or {}) - used)
        if unused:
            raise UserInputError(
                f"--server names {unused}, which no served plan's workflow uses; their actors: "
                f"{sorted(used) or 'none'}."
            )
        self.servers = dict(servers or {})
        self.console = console
        self.poll_seconds = poll_seconds

    def say(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {text}"
        if self.console is not None:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            log.info(line)

    async def serve(self) -> None:
        """Run until cancelled."""
        for plan in self.plans:
            register(self.store, plan, self.files.get(plan.name))
        self.say(f"serving {len(self.plans)} launch plans: {', '.join(p.name for p in self.plans)}")
        async with anyio.create_task_group() as group:
            while True:
                now = time.time()
                known = await anyio.to_thread.run_sync(states, self.store)
                wake = now + self.poll_seconds
                for plan in self.plans:
                    state = known.get(plan.name)
                    if state is None or not state.active:
                        continue
                    due, starts = await anyio.to_thread.run_sync(self._claim_due, plan, state, now)
                    wake = min(wake, due)
                    for launch_id, version, detail in starts:
                        group.start_soon(self._launch, plan, launch_id, version, detail)
                await anyio.sleep(max(0.01, wake - time.time()))

    def _claim_due(
        self, plan: LaunchPlan, state: LaunchPlanState, now: float
    ) -> tuple[float, list[tuple[str, int | None, str]]]:
        """Claim what is due for one plan: when to look again, and (launch, version, detail) to start."""
        when = plan.when
        starts: list[tuple[str, int | None, str]] = []
        if isinstance(when, OnArtifact):
            for version in pending_versions(self.store, plan.name, when.artifact.name, state.first_seen):
                launch = claim(self.store, plan.name, f"artifact:{version.id}", artifact_id=version.id)
                if launch is not None:
                    starts.append(
                        (launch.id, version.version, f"on {version.id} (from run {version.run_id})")
                    )
            return now + self.poll_seconds, starts
        last = last_planned(self.store, plan.name)
        planned = when.latest_due(state.first_seen, last, now)
        if planned is not None:
            launch = claim(self.store, plan.name, f"tick:{planned:.3f}", planned_at=planned)
            if launch is not None:
                detail = f"tick {_clock(planned)}"
                expected = when.next_after(state.first_seen, last)
                if planned > expected + 1e-6:  # ticks passed while no scheduler ran: one launch for them
                    detail += f" (ticks since {_clock(expected)} were missed: started once)"
                starts.append((launch.id, None, detail))
            last = planned
        return when.next_after(state.first_seen, last), starts

    async def _launch(self, plan: LaunchPlan, launch_id: str, version: int | None, detail: str) -> None:
        from nimflow._run import arun

        started = time.time()

        @contextlib.contextmanager
        def on_start(run_id: str, _states: Any) -> Iterator[None]:
            update_launch(self.store, launch_id, run_id=run_id, status="running")
            self.say(f"launch {plan.name} {detail}: run {run_id} started")
            yield

        status, error, run_id = "failed", None, None
        try:
            result = await arun(
                plan.workflow,
                inputs=plan.inputs_for(version),
                servers={a: spec for a, spec in self.servers.items() if a in self.actors[plan.name]},
                store=self.store,
                progress=on_start,
                console=self.console,
                source_file=self.files.get(plan.name),
            )
            status, run_id = "succeeded", result.run_id
        except RunFailedError as exc:
            error, run_id = str(exc), exc.run_id
        except NimflowError as exc:  # e.g. an input that names an artifact with no version yet
            error = str(exc)
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except Exception as exc:  # the scheduler outlives any run
            error = f"{type(exc).__name__}: {exc}"
            log.exception("launch %s failed", plan.name)
        finally:
            with anyio.CancelScope(shield=True):
                values: dict[str, Any] = {"status": status, "error": error, "ended_at": time.time()}
                if run_id is not None:
                    values["run_id"] = run_id
                await anyio.to_thread.run_sync(lambda: update_launch(self.store, launch_id, **values))
            seconds = time.time() - started
            self.say(
                f"launch {plan.name} {detail}: {status} in {seconds:.1f} s"
                + (f" (run {run_id})" if run_id else "")
                + (f": {error}" if error else "")
            )


def _actors_of(plan: LaunchPlan) -> set[str]:
    return {node.task.actor.name for node in plan.workflow.build() if node.task.actor is not None}


def _clock(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp))


async def serve_until_signalled(scheduler: Scheduler) -> None:
    """Serve until SIGINT or SIGTERM, then cancel what runs and return."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    scheduler.say(f"{signal.Signals(signum).name}: stopping; runs in progress are cancelled")
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch)
        await scheduler.serve()


__all__ = ["Scheduler", "serve_until_signalled"]
