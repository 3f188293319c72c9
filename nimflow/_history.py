"""Reading what the database recorded: runs, their task runs, the cache. The CLI's only way in.

The rule for runs whose process is gone lives here: a run still marked `running` whose process
no longer exists (kill -9, a crash, a reboot), or whose heartbeat stopped, was interrupted. Its
duration is frozen at its last sign of life, and its nodes still marked running were interrupted
with it.

Queries are plain SQL through nimflow._reader (no ORM: the read commands start in a fraction of
the time). Every function takes the Reader the CLI opens, or an open Store.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from nimflow._exceptions import UserInputError
from nimflow._reader import Reader, reader_for
from nimflow._status import Status

if TYPE_CHECKING:
    from nimflow._store import Store

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
    "scale_events",
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
class ScaleEventInfo:
    """An actor's replica count changed during a run: when, from -> to, why."""

    actor: str
    at: float
    from_count: int
    to_count: int
    reason: str


@dataclass(frozen=True)
class CacheSummary:
    task: str
    entries: int
    versions: list[str]
    bytes: int
    newest: float


# -- runs ---------------------------------------------------------------------------------------

Source: TypeAlias = "Reader | Store"  # a Store only as a type: the CLI never opens one to read


class _RunRow(NamedTuple):
    id: str
    workflow: str
    file: str | None
    inputs: str | None
    status: str
    started_at: float
    ended_at: float | None
    error: str | None
    outputs: str | None
    pid: int | None
    served_by: str | None
    heartbeat_at: float | None
    host: str | None


_RUN_SELECT = f"SELECT {', '.join(_RunRow._fields)} FROM run"


def _runs(db: Reader, where: str, params: dict[str, Any]) -> list[_RunRow]:
    return [_RunRow(*row) for row in db.rows(f"{_RUN_SELECT} {where}", params)]


def latest_run(source: Source) -> RunInfo:
    db = reader_for(source)
    rows = _runs(db, "ORDER BY started_at DESC LIMIT 1", {})
    if not rows:
        raise UserInputError("no runs yet. Start one with: nimflow run FILE")
    return _info(db, rows[0])


def find_run(source: Source, prefix: str | None) -> RunInfo:
    """The run whose id starts with `prefix` (the latest run for None)."""
    if prefix is None:
        return latest_run(source)
    db = reader_for(source)
    # substr rather than LIKE, so that `_` and `%` in a prefix match only themselves.
    matches = _runs(db, "WHERE substr(id, 1, :n) = :prefix LIMIT 2", {"n": len(prefix), "prefix": prefix})
    if not matches:
        raise UserInputError(f"no run {prefix!r}. List runs with: nimflow runs")
    if len(matches) > 1:
        raise UserInputError(f"run id {prefix!r} is ambiguous; give more characters.")
    return _info(db, matches[0])


def list_runs(source: Source, limit: int = 20) -> list[RunInfo]:
    """The newest runs first."""
    db = reader_for(source)
    rows = _runs(db, "ORDER BY started_at DESC LIMIT :limit", {"limit": limit})
    counts = _claim_counts(db, [row.id for row in rows])
    return [_info(db, row, counts.get(row.id, (0, 0))) for row in rows]


def _in(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`name IN (:p0, :p1, ...)` and its parameters."""
    params = {f"p{i}": value for i, value in enumerate(values)}
    return f"{name} IN ({', '.join(':' + key for key in params)})", params


def _claim_counts(db: Reader, run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """run id -> (waited, taken over), summed over its node rows, in a query per 500 runs."""
    counts: dict[str, tuple[int, int]] = {}
    for start in range(0, len(run_ids), 500):
        where, params = _in("run_id", run_ids[start : start + 500])
        sql = f"SELECT run_id, SUM(waited), SUM(taken_over) FROM taskrun WHERE {where} AND item IS NULL GROUP BY run_id"
        counts.update({run_id: (int(w or 0), int(t or 0)) for run_id, w, t in db.rows(sql, params)})
    return counts


def task_runs(source: Source, run: RunInfo) -> list[TaskRunInfo]:
    """The run's nodes and map items; those left running by an interrupted run say interrupted."""
    rows = reader_for(source).rows(
        "SELECT node, task, item, status, cache_hit, attempts, retries, prompt_tokens + completion_tokens,"
        " started_at, ended_at, error, host, pid, waited, taken_over FROM taskrun WHERE run_id = :run",
        {"run": run.id},
    )
    dead = run.status == Status.INTERRUPTED
    return [
        TaskRunInfo(
            node=node,
            task=task,
            item=item,
            status=Status.INTERRUPTED if dead and status == Status.RUNNING else status,
            cache_hit=bool(cache_hit),
            attempts=attempts,
            retries=retries,
            tokens=int(tokens or 0),
            started_at=started,
            ended_at=run.ended_at if dead and ended is None else ended,
            error=error,
            host=host,
            pid=pid,
            waited=waited,
            taken_over=taken_over,
        )
        for node, task, item, status, cache_hit, attempts, retries, tokens, started, ended, error, host, pid, waited, taken_over in rows
    ]


def scale_events(source: Source, run_id: str) -> list[ScaleEventInfo]:
    """A run's scale events (an autoscaled actor's replica changes), oldest first."""
    rows = reader_for(source).rows(
        "SELECT actor, at, from_count, to_count, reason FROM scaleevent WHERE run_id = :run ORDER BY id",
        {"run": run_id},
    )
    return [ScaleEventInfo(*row) for row in rows]


def _info(db: Reader, row: _RunRow, counts: tuple[int, int] | None = None) -> RunInfo:
    status, ended = row.status, row.ended_at
    if counts is None:
        counts = _claim_counts(db, [row.id]).get(row.id, (0, 0))
    if _is_interrupted(row):
        status, ended = Status.INTERRUPTED, _last_sign_of_life(db, row)
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


def _is_interrupted(row: _RunRow) -> bool:
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


def _last_sign_of_life(db: Reader, row: _RunRow) -> float:
    """The heartbeat, else the latest moment a task run of it started or ended."""
    heartbeat = row.heartbeat_at
    if heartbeat is not None:
        return float(heartbeat)
    (latest,) = db.rows(
        "SELECT MAX(started_at), MAX(ended_at) FROM taskrun WHERE run_id = :run", {"run": row.id}
    )
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


def cache_summary(source: Source) -> list[CacheSummary]:
    """Cached results per task: entries, versions, size in bytes, newest."""
    db = reader_for(source)
    rows = db.rows(
        "SELECT task, COUNT(*), SUM(LENGTH(output)), MAX(created_at) FROM cacheentry GROUP BY task ORDER BY task"
    )
    versions: dict[str, list[str]] = {}
    for task_name, version in db.rows("SELECT DISTINCT task, cache_version FROM cacheentry"):
        versions.setdefault(task_name, []).append(version)
    return [
        CacheSummary(task, int(count), sorted(versions[task]), int(size or 0), float(newest))
        for task, count, size, newest in rows
    ]


def clear_cache(source: Source, task: str | None) -> int:
    """Delete the cached results of one task (None: of every task); how many were removed."""
    db = reader_for(source)
    if task is None:
        return db.execute("DELETE FROM cacheentry")
    return db.execute("DELETE FROM cacheentry WHERE task = :task", {"task": task})
