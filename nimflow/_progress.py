"""Live progress of a run (rich): one line per node, with done/total, cache hits and failures."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from nimflow._recorder import NodeState
from nimflow._status import Status


class _StatusColumn(SpinnerColumn):
    """The spinner while a node runs, a mark once it ended (a failed bar never completes)."""

    _MARKS = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]-[/]"}

    def render(self, task: Any) -> RenderableType:
        mark = self._MARKS.get(task.fields.get("status", ""))
        return Text.from_markup(mark) if mark else super().render(task)


class _RunProgress(Progress):
    """Reads the runner's counters when it redraws, so the runner never pays for a display update."""

    def __init__(self, states: Mapping[str, NodeState], console: Console) -> None:
        self._states = states
        self._ids: dict[str, TaskID] = {}
        super().__init__(
            _StatusColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=8,
            transient=False,
        )

    def add_nodes(self) -> None:
        """One hidden line per node, shown once it starts (adding lines while drawing would recurse)."""
        for node_id, state in self._states.items():
            self._ids[node_id] = self.add_task(
                state.label, total=state.total, info="", status="", visible=False
            )

    def sync(self) -> None:
        for node_id, state in list(self._states.items()):
            if state.status is Status.PENDING:
                continue
            info = []
            if state.cached:
                info.append(f"[cyan]{state.cached} cached[/]")
            if state.failed:
                info.append(f"[red]{state.failed} failed[/]")
            # A failed or skipped node says so, unless "1 failed" above says it already.
            if state.status in (Status.FAILED, Status.SKIPPED) and not state.failed:
                info.append(f"[red]{state.status}[/]")
            self.update(
                self._ids[node_id],
                total=state.total,
                completed=state.done,
                info=" ".join(info),
                status=state.status,
                visible=True,
            )

    def get_renderables(self) -> Iterator[Any]:
        self.sync()
        yield from super().get_renderables()


@contextmanager
def live_progress(console: Console, run_id: str, states: Mapping[str, NodeState]) -> Iterator[None]:
    progress = _RunProgress(states, console)
    progress.add_nodes()
    console.print(f"[bold]run {run_id}[/]")
    with progress:
        yield
    progress.sync()
