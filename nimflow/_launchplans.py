"""Launch plans: a workflow with fixed inputs, started on a schedule or when an artifact changes.

Declared in a pipeline file (`nf.LaunchPlan(wf, name, inputs={...}, schedule=nf.FixedRate(...))`)
and run by `nimflow serve`. Their state (active or not, first seen) and every launch live in the
database. A launch is claimed by inserting its row: the unique (plan, key) makes two schedulers
on one database, or one restarted, start each tick and each artifact version once.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from croniter import croniter
from sqlalchemy import UniqueConstraint, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from nimflow._artifacts import Artifact, ArtifactQuery, ArtifactVersion
from nimflow._exceptions import UserInputError, WorkflowDefinitionError
from nimflow._store import Store
from nimflow._workflow import WorkflowSpec

# --------------------------------------------------------------------------------------------------
# Schedules and triggers


@dataclass(frozen=True)
class FixedRate:
    """Start every `every`, counted from the planned start times (not from when a run ends)."""

    every: timedelta

    def __post_init__(self) -> None:
        if self.every.total_seconds() <= 0:
            raise WorkflowDefinitionError(f"FixedRate({self.every}): give a period longer than zero.")

    def text(self) -> str:
        return f"fixed_rate:{self.every.total_seconds():g}"

    def latest_due(self, anchor: float, last: float | None, now: float) -> float | None:
        """The planned time to start now (the newest one passed, missed ticks fire once), or None."""
        period = self.every.total_seconds()
        start = anchor if last is None else last + period
        if start > now:
            return None
        return start + period * math.floor((now - start) / period)

    def next_after(self, anchor: float, last: float | None) -> float:
        period = self.every.total_seconds()
        return anchor if last is None else last + period


@dataclass(frozen=True)
class Cron:
    """Start at the times a cron expression names (`*/5 * * * *`: every five minutes), in UTC."""

    expression: str

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.expression):
            raise WorkflowDefinitionError(
                f"Cron({self.expression!r}) is not a cron expression; write five fields, e.g. '*/5 * * * *'."
            )

    def text(self) -> str:
        return f"cron:{self.expression}"

    def latest_due(self, anchor: float, last: float | None, now: float) -> float | None:
        start = self.next_after(anchor, last)
        if start > now:
            return None
        newest = float(croniter(self.expression, now + 1e-3).get_prev(float))
        return max(start, newest)

    def next_after(self, anchor: float, last: float | None) -> float:
        return float(croniter(self.expression, last if last is not None else anchor).get_next(float))


Schedule = FixedRate | Cron


@dataclass(frozen=True)
class OnArtifact:
    """Start once for every new version of `artifact`, with that version as the plan's input."""

    artifact: Artifact

    def text(self) -> str:
        return f"artifact:{self.artifact.name}"


def schedule_from_text(text: str) -> Schedule | OnArtifact:
    kind, _, spec = text.partition(":")
    if kind == "fixed_rate":
        return FixedRate(timedelta(seconds=float(spec)))
    if kind == "cron":
        return Cron(spec)
    return OnArtifact(Artifact(spec))


def describe(text: str) -> str:
    """A schedule as a person reads it."""
    kind, _, spec = text.partition(":")
    return {"fixed_rate": f"every {spec} s", "cron": f"cron {spec}", "artifact": f"on new {spec}"}.get(
        kind, text
    )


# --------------------------------------------------------------------------------------------------
# The declaration


@dataclass
class LaunchPlan:
    """A workflow, its inputs, and when to start it."""

    workflow: WorkflowSpec[..., Any]
    name: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None
    trigger: OnArtifact | None = None
    active: bool = True  # the state a plan starts in, the first time a scheduler sees it

    def __post_init__(self) -> None:
        if not isinstance(self.workflow, WorkflowSpec):
            raise WorkflowDefinitionError(
                f"LaunchPlan {self.name!r}: give a @workflow, not {self.workflow!r}."
            )
        if (self.schedule is None) == (self.trigger is None):
            raise WorkflowDefinitionError(
                f"LaunchPlan {self.name!r}: give either schedule=nf.FixedRate(...)/nf.Cron(...) "
                "or trigger=nf.OnArtifact(artifact)."
            )
        unknown = [n for n in self.inputs if n not in self.workflow.signature.parameters]
        if unknown:
            raise WorkflowDefinitionError(
                f"LaunchPlan {self.name!r}: workflow {self.workflow.name} has no input {unknown}."
            )
        if self.trigger is not None and not self.trigger_inputs():
            raise WorkflowDefinitionError(
                f"LaunchPlan {self.name!r} is triggered by {self.trigger.artifact.name}, but no input of "
                f"{self.workflow.name} takes it: give one a default of {self.trigger.artifact.name}.query() "
                "or put that query in inputs={...}."
            )

    @property
    def when(self) -> Schedule | OnArtifact:
        when = self.schedule or self.trigger
        assert when is not None
        return when

    def trigger_inputs(self) -> list[str]:
        """The inputs that read the trigger's artifact (from the plan's inputs or their defaults)."""
        assert self.trigger is not None
        wanted = self.trigger.artifact.name
        names = []
        for name, param in self.workflow.signature.parameters.items():
            value = self.inputs.get(name, param.default)
            if isinstance(value, ArtifactQuery) and value.name == wanted:
                names.append(name)
        return names

    def inputs_for(self, artifact_version: int | None) -> dict[str, Any]:
        inputs = dict(self.inputs)
        if artifact_version is not None and self.trigger is not None:
            for name in self.trigger_inputs():
                inputs[name] = ArtifactQuery(self.trigger.artifact.name, artifact_version)
        return inputs


def plans_in(module: Any) -> list[LaunchPlan]:
    return [value for value in vars(module).values() if isinstance(value, LaunchPlan)]


# --------------------------------------------------------------------------------------------------
# Tables


class LaunchPlanState(SQLModel, table=True):
    __tablename__ = "launch_plan"

    name: str = Field(primary_key=True)
    workflow: str
    file: str | None = None
    schedule: str  # "fixed_rate:SECONDS" | "cron:EXPR" | "artifact:NAME"
    active: bool = True
    first_seen: float = Field(default_factory=time.time)  # the fixed-rate grid starts here
    updated_at: float = Field(default_factory=time.time)


class Launch(SQLModel, table=True):
    """One start of a plan: a tick of its schedule or a version of its trigger's artifact."""

    __tablename__ = "launch"
    __table_args__ = (UniqueConstraint("plan", "key"),)

    id: str = Field(primary_key=True)
    plan: str = Field(index=True)
    key: str  # "tick:<planned time>" | "artifact:<name>:<version>": at most one launch each
    planned_at: float | None = None
    artifact_id: str | None = None
    scheduler: str  # host:pid of the scheduler that claimed it
    claimed_at: float = Field(default_factory=time.time)
    run_id: str | None = None
    status: str = "claimed"  # claimed | running | succeeded | failed | cancelled
    error: str | None = None
    ended_at: float | None = None


def scheduler_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def register(store: Store, plan: LaunchPlan, file: str | None) -> LaunchPlanState:
    """The plan's row: inserted once (the first scheduler fixes `first_seen`), kept up to date."""
    store.ensure_tables()
    with store.session() as session:
        row = session.get(LaunchPlanState, plan.name)
        if row is None:
            row = LaunchPlanState(
                name=plan.name,
                workflow=plan.workflow.name,
                file=file,
                schedule=plan.when.text(),
                active=plan.active,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another scheduler registered it first
                session.rollback()
                found = session.get(LaunchPlanState, plan.name)
                assert found is not None
                return found
            return row
        if (row.workflow, row.schedule, row.file) != (plan.workflow.name, plan.when.text(), file):
            row.workflow, row.schedule, row.file = plan.workflow.name, plan.when.text(), file
            row.updated_at = time.time()
            session.add(row)
            session.commit()
        return row


def states(store: Store) -> dict[str, LaunchPlanState]:
    store.ensure_tables()
    with store.session() as session:
        return {row.name: row for row in session.exec(select(LaunchPlanState))}


def set_active(store: Store, name: str, active: bool) -> None:
    store.ensure_tables()
    with store.session() as session:
        row = session.get(LaunchPlanState, name)
        if row is None:
            known = sorted(states(store)) or ["none yet"]
            raise UserInputError(
                f"no launch plan {name!r} in the database (known: {', '.join(known)}). A plan is "
                "registered by `nimflow serve FILE` or `nimflow launchplans ls FILE`."
            )
        row.active, row.updated_at = active, time.time()
        session.add(row)
        session.commit()


def last_planned(store: Store, plan: str) -> float | None:
    with store.session() as session:
        value = session.exec(select(func.max(Launch.planned_at)).where(Launch.plan == plan)).one()
    return None if value is None else float(value)


def pending_versions(store: Store, plan: str, artifact: str, since: float) -> list[ArtifactVersion]:
    """Versions of `artifact` created since `since` that `plan` has not launched on, oldest first."""
    launched = select(Launch.artifact_id).where(Launch.plan == plan, col(Launch.artifact_id).is_not(None))
    with store.session() as session:
        query = (
            select(ArtifactVersion)
            .where(ArtifactVersion.name == artifact, ArtifactVersion.created_at >= since)
            .where(col(ArtifactVersion.id).not_in(launched))
            .order_by(col(ArtifactVersion.created_at), col(ArtifactVersion.version))
        )
        return list(session.exec(query))


def claim(
    store: Store, plan: str, key: str, *, planned_at: float | None = None, artifact_id: str | None = None
) -> Launch | None:
    """Insert the launch's row; None when another scheduler (or an earlier life of this one) has it."""
    row = Launch(
        id=uuid.uuid4().hex[:12],
        plan=plan,
        key=key,
        planned_at=planned_at,
        artifact_id=artifact_id,
        scheduler=scheduler_id(),
    )
    with store.session() as session:
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
    return row


def update_launch(store: Store, launch_id: str, **values: Any) -> None:
    with store.session() as session:
        row = session.get(Launch, launch_id)
        if row is not None:
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
            session.commit()


def launches(store: Store, plan: str | None = None, limit: int = 1000) -> list[Launch]:
    """Newest first."""
    store.ensure_tables()
    with store.session() as session:
        query = select(Launch)
        if plan is not None:
            query = query.where(Launch.plan == plan)
        return list(session.exec(query.order_by(col(Launch.claimed_at).desc()).limit(limit)))


__all__ = [
    "Cron",
    "FixedRate",
    "Launch",
    "LaunchPlan",
    "LaunchPlanState",
    "OnArtifact",
    "claim",
    "describe",
    "launches",
    "pending_versions",
    "plans_in",
    "register",
    "schedule_from_text",
    "set_active",
    "states",
    "update_launch",
]
