"""Reading what the database recorded: runs, their task runs, the cache. The CLI's only way in.

The rule for runs whose process is gone lives here: a run still marked `running` whose process
no longer exists (kill -9, a crash, a reboot), or whose heartbeat stopped, was interrupted. Its
duration is frozen at its last sign of life, and its nodes still marked running were interrupted
with it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from nimflow._exceptions import UserInputError
from nimflow._status import Status
from nimflow._store import CacheEntry, Run, Store, TaskRun

__all__ = [
    "STALE_HEARTBEAT_SECONDS",
    "CacheSummary",
    "RunInfo",
    "TaskRunInfo",
    "cache_summary",
    "clear_cache",
    "error_message",
    "find_run",
    "latest_run",
    "list_runs",
    "task_runs",
]

# A run writes its heartbeat every ~2 s; this much silence means its process is gone.
STALE_HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class RunInfo:
    """A run as it should be shown: `status` already says `interrupted` for a run that died."""

    id: str
    workflow: str
    status: str
    started_at: float
    ended_at: float | None  # for an interrupted run: its last sign of life
    file: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: str | None = None  # JSON
    pid: int | None = None
    served_by: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    waited: int = 0  # items other runs computed while this one waited for them
    taken_over: int = 0  # items this run took over from runs that let them go (they died)

    @property
    def seconds(self) -> float:
        return (self.ended_at if self.ended_at is not None else time.time()) - self.started_at

    @property
    def status_text(self) -> str:
        """The status with its reason when there is one: `cancelled (Ctrl-C)`, `cancelled by nimflow kill`."""
        if self.status != Status.CANCELLED:
            return self.status
        error = (self.error or "").strip()
        if error.startswith("cancelled"):
            return error.splitlines()[0]
        if error.startswith("KeyboardInterrupt"):  # runs recorded before reasons were
            return "cancelled (Ctrl-C)"
        return "cancelled"


@dataclass(frozen=True)
class TaskRunInfo:
    """One node of a run, or one map item (`item` is its index)."""

    node: str
    task: str
    item: int | None
    status: str
    cache_hit: bool
    attempts: int
    retries: int
    tokens: int
    started_at: float | None
    ended_at: float | None
    error: str | None  # the whole stored text: a traceback for user code
    host: str | None = None  # who ran (or recorded) it
    pid: int | None = None
    waited: int = 0  # on a node: its items other runs computed while this one waited
    taken_over: int = 0  # on a node: its items taken over from runs that died

    @property
    def process(self) -> str:
        """host:pid, as `runs` and `show` print it."""
        return f"{self.host or '?'}:{self.pid if self.pid is not None else '?'}"

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at if self.ended_at is not None else time.time()) - self.started_at


@dataclass(frozen=True)
class CacheSummary:
    task: str
    entries: int
    versions: list[str]
    bytes: int
    newest: float


# -- runs ---------------------------------------------------------------------------------------


def latest_run(store: Store) -> RunInfo:
    with store.session() as session:
        row = session.exec(select(Run).order_by(col(Run.started_at).desc()).limit(1)).first()
    if row is None:
        raise UserInputError("no runs yet. Start one with: nimflow run FILE")
    return _info(store, row)


def find_run(store: Store, prefix: str | None) -> RunInfo:
    """The run whose id starts with `prefix` (the latest run for None)."""
    if prefix is None:
        return latest_run(store)
    with store.session() as session:
        matches = session.exec(select(Run).where(col(Run.id).startswith(prefix)).limit(2)).all()
    if not matches:
        raise UserInputError(f"no run {prefix!r}. List runs with: nimflow runs")
    if len(matches) > 1:
        raise UserInputError(f"run id {prefix!r} is ambiguous; give more characters.")
    return _info(store, matches[0])


def list_runs(store: Store, limit: int = 20) -> list[RunInfo]:
    """The newest runs first."""
    with store.session() as session:
        rows = session.exec(select(Run).order_by(col(Run.started_at).desc()).limit(limit)).all()
        counts = _claim_counts(session, [row.id for row in rows])
    return [_info(store, row, counts.get(row.id, (0, 0))) for row in rows]


def _claim_counts(session: Any, run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """run id -> (waited, taken over), summed over its node rows, for these runs in one query."""
    if not run_ids:
        return {}
    query = (
        sa_select(col(TaskRun.run_id), func.sum(TaskRun.waited), func.sum(TaskRun.taken_over))
        .where(col(TaskRun.run_id).in_(run_ids), col(TaskRun.item).is_(None))
        .group_by(col(TaskRun.run_id))
    )
    return {run_id: (int(w or 0), int(t or 0)) for run_id, w, t in session.execute(query)}


def task_runs(store: Store, run: RunInfo) -> list[TaskRunInfo]:
    """The run's nodes and map items; those left running by an interrupted run say interrupted."""
    with store.session() as session:
        rows = session.exec(select(TaskRun).where(TaskRun.run_id == run.id)).all()
    dead = run.status == Status.INTERRUPTED
    return [
        TaskRunInfo(
            node=t.node,
            task=t.task,
            item=t.item,
            status=Status.INTERRUPTED if dead and t.status == Status.RUNNING else t.status,
            cache_hit=t.cache_hit,
            attempts=t.attempts,
            retries=t.retries,
            tokens=t.prompt_tokens + t.completion_tokens,
            started_at=t.started_at,
            ended_at=run.ended_at if dead and t.ended_at is None else t.ended_at,
            error=t.error,
            host=t.host,
            pid=t.pid,
            waited=t.waited,
            taken_over=t.taken_over,
        )
        for t in rows
    ]


def _info(store: Store, row: Run, counts: tuple[int, int] | None = None) -> RunInfo:
    status, ended = row.status, row.ended_at
    if counts is None:
        with store.session() as session:
            counts = _claim_counts(session, [row.id]).get(row.id, (0, 0))
    if _is_interrupted(row):
        status, ended = Status.INTERRUPTED, _last_sign_of_life(store, row)
    return RunInfo(
        id=row.id,
        workflow=row.workflow,
        status=status,
        started_at=row.started_at,
        ended_at=ended,
        file=row.file,
        inputs=json.loads(row.inputs or "{}"),
        error=row.error,
        outputs=row.outputs,
        pid=row.pid,
        served_by=json.loads(row.served_by) if row.served_by else {},
        host=row.host,
        waited=counts[0],
        taken_over=counts[1],
    )


def _is_interrupted(row: Run) -> bool:
    if row.status != Status.RUNNING:
        return False
    heartbeat = row.heartbeat_at
    if heartbeat is not None and time.time() - heartbeat > STALE_HEARTBEAT_SECONDS:
        return True
    if row.pid is None:
        return False
    try:  # runs and the commands that inspect them share one machine (pids are local)
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def _last_sign_of_life(store: Store, row: Run) -> float:
    """The heartbeat, else the latest moment a task run of it started or ended."""
    heartbeat = row.heartbeat_at
    if heartbeat is not None:
        return float(heartbeat)
    with store.session() as session:
        latest = session.execute(
            sa_select(func.max(col(TaskRun.started_at)), func.max(col(TaskRun.ended_at))).where(
                col(TaskRun.run_id) == row.id
            )
        ).one()
    return max([row.started_at, *(float(t) for t in latest if t is not None)])


# -- errors -------------------------------------------------------------------------------------


def error_message(stored: str) -> str:
    """The whole message of a stored error, without the traceback that may precede it.

    Task runs store a formatted traceback; the message is what follows its last frame (every
    line of it: a container's exit code and the tail of its log included).
    """
    text = stored.strip()
    if not text.startswith("Traceback"):
        return text
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    start = frames[-1] + 1 if frames else 1
    while start < len(lines) and lines[start].startswith("    "):  # the frame's source line, carets
        start += 1
    message = "\n".join(lines[start:]).strip()
    head, sep, rest = message.partition(":")
    if sep and " " not in head and "." in head:  # nimflow._exceptions.ServerExitedError -> ServerExitedError
        message = head.rsplit(".", 1)[1] + sep + rest
    return message


# -- the cache ----------------------------------------------------------------------------------


def cache_summary(store: Store) -> list[CacheSummary]:
    """Cached results per task: entries, versions, size in bytes, newest."""
    with store.session() as session:
        rows = session.execute(
            sa_select(
                col(CacheEntry.task),
                func.count(),
                func.sum(func.length(CacheEntry.output)),
                func.max(CacheEntry.created_at),
            )
            .group_by(CacheEntry.task)
            .order_by(col(CacheEntry.task))
        ).all()
        versions: dict[str, list[str]] = {}
        for task_name, version in session.execute(
            sa_select(col(CacheEntry.task), col(CacheEntry.cache_version)).distinct()
        ):
            versions.setdefault(task_name, []).append(version)
    return [
        CacheSummary(task, int(count), sorted(versions[task]), int(size or 0), float(newest))
        for task, count, size, newest in rows
    ]


def clear_cache(store: Store, task: str | None) -> int:
    """Delete the cached results of one task (None: of every task); how many were removed."""
    with store.session() as session:
        stmt = delete(CacheEntry)
        if task is not None:
            stmt = stmt.where(col(CacheEntry.task) == task)
        removed = int(session.exec(stmt).rowcount)
        session.commit()
    return removed
