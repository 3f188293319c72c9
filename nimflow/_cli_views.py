"""What `nimflow runs`, `show` and `cache ls` print: rich tables and trees built from the read API."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from nimflow._history import CacheSummary, RunInfo, ScaleEventInfo, TaskRunInfo, error_message
from nimflow._status import Status

__all__ = [
    "cache_table",
    "human_outputs",
    "plural",
    "processes",
    "run_tree",
    "runs_table",
    "shared",
    "status_markup",
]

_STYLE = {
    Status.SUCCEEDED: "green",
    Status.FAILED: "red",
    Status.RUNNING: "yellow",
    Status.SKIPPED: "dim",
    Status.CANCELLED: "magenta",
    Status.INTERRUPTED: "magenta",
}


def status_markup(status: str, text: str | None = None) -> str:
    style = _STYLE.get(status, "")  # type: ignore[call-overload]
    shown = escape(text or status)
    return f"[{style}]{shown}[/]" if style else shown


def duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.2f}s"


def runs_table(runs: Sequence[RunInfo]) -> Table:
    table = Table("run", "workflow", "status", "started", "duration", "process", "shared", "error")
    for run in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
        first_line = (run.error or "").strip().splitlines()[:1]
        table.add_row(
            run.id,
            escape(run.workflow),
            status_markup(run.status, run.status_text),
            started,
            duration(run.seconds),
            escape(f"{run.host or '?'}:{run.pid if run.pid is not None else '?'}"),
            shared(run.waited, run.taken_over),
            escape(first_line[0][:80] if first_line and run.status != Status.CANCELLED else ""),
        )
    return table


def shared(waited: int, taken_over: int) -> str:
    """What a run shared with runs on the same database: items it waited for and took over."""
    parts = [f"{waited} waited for" if waited else "", f"{taken_over} taken over" if taken_over else ""]
    return ", ".join(p for p in parts if p)


def processes(rows: Sequence[TaskRunInfo]) -> str:
    """Which processes computed these items (cache hits are not computed), busiest first."""
    counts = Counter(t.process for t in rows if not t.cache_hit)
    return ", ".join(f"{process} ({n})" for process, n in counts.most_common())


def run_tree(
    run: RunInfo,
    rows: Sequence[TaskRunInfo],
    *,
    tracebacks: bool = False,
    scale_events: Sequence[ScaleEventInfo] = (),
) -> Tree:
    """The run as a tree: one branch per node, with its failed items and their whole messages."""
    head = f"[bold]run {run.id}[/] {escape(run.workflow)} {status_markup(run.status, run.status_text)} "
    head += duration(run.seconds)
    head += f"  on {escape(run.host or '?')}:{run.pid if run.pid is not None else '?'}"
    if run.waited or run.taken_over:
        head += f"  ({shared(run.waited, run.taken_over)})"
    if run.inputs:
        head += f"  inputs {escape(str(run.inputs))}"
    tree = Tree(head)
    for actor, how in run.served_by.items():
        tree.add(f"[yellow]{escape(actor)}[/]: {escape(how)}")
    for event in scale_events:  # an autoscaled actor's changes
        at = time.strftime("%H:%M:%S", time.localtime(event.at))
        tree.add(
            f"[dim]{at}[/] [yellow]{escape(event.actor)}[/] {event.from_count} -> {event.to_count} replicas: {escape(event.reason)}"
        )
    nodes = sorted((t for t in rows if t.item is None), key=lambda t: int(t.node[1:]))
    items_by_node: dict[str, list[TaskRunInfo]] = {}
    for t in rows:
        if t.item is not None:
            items_by_node.setdefault(t.node, []).append(t)
    for node in nodes:
        items = items_by_node.get(node.node, [])
        label = (
            f"{node.node} [bold]{escape(node.task)}[/] {status_markup(node.status)} {duration(node.seconds)}"
        )
        if items:
            hits = sum(t.cache_hit for t in items)
            failed = [t for t in items if t.status == Status.FAILED]
            tokens = sum(t.tokens for t in items)
            retries = sum(t.retries for t in items)
            label += f"  {plural(len(items), 'item')}, {hits} cached, {len(failed)} failed"
            label += f", attempts {sum(t.attempts for t in items)}"
            label += f", {tokens} tokens" if tokens else ""
            label += f", {retries} retries" if retries else ""
            label += f", {shared(node.waited, node.taken_over)}" if node.waited or node.taken_over else ""
            ran_by = processes(items)
            label += f"  [dim]computed by {escape(ran_by)}[/]" if ran_by else ""
        else:
            label += "  cached" if node.cache_hit else f"  attempts {node.attempts}"
            label += f", {node.tokens} tokens" if node.tokens else ""
            label += f", {shared(node.waited, node.taken_over)}" if node.waited or node.taken_over else ""
            label += "" if node.cache_hit else f"  [dim]computed by {escape(node.process)}[/]"
        branch = tree.add(label)
        if node.error:
            _add_error(branch, "", node.error, tracebacks)
        for item in sorted((t for t in items if t.status == Status.FAILED), key=lambda t: t.item or 0)[:10]:
            _add_error(branch, f"item {item.item}: ", item.error or "", tracebacks)
    if run.error and run.status not in (Status.SUCCEEDED, Status.CANCELLED):
        tree.add(f"[red]{escape(run.error)}[/]")
    if not tracebacks and any(
        (t.error or "").startswith("Traceback") for t in rows if t.status == Status.FAILED
    ):
        tree.add(f"[dim]the Python tracebacks: nimflow show {run.id} --traceback[/]")
    return tree


def _add_error(branch: Tree, prefix: str, stored: str, tracebacks: bool) -> None:
    message = error_message(stored)
    leaf = branch.add(f"[red]{escape(prefix + message)}[/]")
    if tracebacks and stored.strip().startswith("Traceback"):
        leaf.add(escape(stored.rstrip()))


def cache_table(rows: Sequence[CacheSummary]) -> Table:
    table = Table("task", "entries", "versions", "bytes", "newest")
    for row in rows:
        table.add_row(
            escape(row.task),
            str(row.entries),
            ", ".join(row.versions),
            str(row.bytes),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(row.newest)),
        )
    return table


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def human_outputs(data: Any, indent: str = "") -> str:
    """Outputs for a person: text as it is, one list item or dict entry a line, nesting indented."""
    if isinstance(data, list) and data:
        return "\n".join(_entry(f"{indent}- ", item, indent + "  ") for item in data)
    if isinstance(data, dict) and data:
        return "\n".join(_entry(f"{indent}{key}: ", value, indent + "  ") for key, value in data.items())
    if isinstance(data, str):
        return indent + data.replace("\n", "\n" + indent)
    return indent + json.dumps(data, ensure_ascii=False)


def _entry(prefix: str, value: Any, indent: str) -> str:
    if isinstance(value, list | dict) and value:
        return prefix.rstrip() + "\n" + human_outputs(value, indent)
    return prefix + human_outputs(value, indent).lstrip(" ")
