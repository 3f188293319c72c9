"""The commands that read (and clear) what runs recorded: runs, show, outputs, kill, cache.

They go through the read API, nimflow._history, and print with nimflow._cli_views.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Annotated

import click
import typer

from nimflow import _history
from nimflow._cli_views import cache_table, human_outputs, plural, run_tree, runs_table
from nimflow._console import console, print_table
from nimflow._exceptions import UserInputError
from nimflow._reader import open_reader
from nimflow._status import Status

__all__ = ["cache_app", "kill", "outputs", "runs", "show"]

cache_app = typer.Typer(help="Inspect or clear cached task results.", no_args_is_help=True)


def runs(limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20) -> None:
    """List recent runs.

    Newest first: status (interrupted for a run whose process died), start, duration, first error.
    """
    with open_reader() as store:
        rows = _history.list_runs(store, limit)
    print_table(console, runs_table(rows))


def show(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or a prefix); default: the latest.")] = None,
    tracebacks: Annotated[
        bool, typer.Option("--traceback", help="Add the Python traceback under each failed node and item.")
    ] = False,
) -> None:
    """Show a run as a tree of nodes.

    Per node: status, duration, attempts, cache hits, tokens, and the whole message of each failure.
    """
    with open_reader() as store:
        info = _history.find_run(store, run_id)
        rows = _history.task_runs(store, info)
        events = _history.scale_events(store, info.id)
    console.print(run_tree(info, rows, tracebacks=tracebacks, scale_events=events))


def outputs(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or a prefix); default: the latest.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON, for programs.")] = False,
) -> None:
    """Print a run's outputs.

    Readable by default (one list item a line); --json prints JSON for programs.
    """
    with open_reader() as store:
        info = _history.find_run(store, run_id)
    if info.outputs is None:
        raise UserInputError(
            f"run {info.id} has no outputs (status: {info.status_text}). See: nimflow show {info.id}"
        )
    data = json.loads(info.outputs)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(human_outputs(data) + "\n")


def kill(run_id: Annotated[str, typer.Argument(help="Run id (or a prefix).")]) -> None:
    """Cancel a running run.

    From another terminal; the run stops as on Ctrl-C and its finished items stay saved.
    """
    with open_reader() as store:
        info = _history.find_run(store, run_id)
    if info.status != Status.RUNNING or info.pid is None:
        raise UserInputError(f"run {info.id} is not running (status: {info.status_text}).")
    try:  # the run records SIGTERM as "cancelled by nimflow kill"
        os.kill(info.pid, signal.SIGTERM)
    except ProcessLookupError as exc:
        raise UserInputError(f"run {info.id} is marked running but its process {info.pid} is gone.") from exc
    console.print(f"asked run {info.id} (pid {info.pid}) to stop; its finished items stay saved")


# --------------------------------------------------------------------------------------------------
# nimflow cache


@cache_app.command("ls")
def cache_ls() -> None:
    """List cached results per task.

    Entries, cache versions, size and newest entry; the task names are those `cache clear` takes.
    """
    with open_reader() as store:
        rows = _history.cache_summary(store)
    print_table(console, cache_table(rows))


@cache_app.command("clear")
def cache_clear(
    task: Annotated[
        str | None, typer.Argument(help="The task whose results to delete (as `nimflow cache ls` names it).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete the cached results of every task.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete cached results.

    Of one task, or of every task with --all; asks first unless --yes.
    """
    if (task is None) == (not all_):
        raise click.UsageError("give a task name (see: nimflow cache ls) or --all, not both")
    with open_reader() as store:
        known = {row.task: row.entries for row in _history.cache_summary(store)}
        if task is not None and task not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise UserInputError(f"no cached results for task {task!r}; cached tasks: {listing}.")
        count = known[task] if task is not None else sum(known.values())
        what = (
            f"the {plural(count, 'cached result')} of {task}"
            if task
            else f"all {plural(count, 'cached result')}"
        )
        if count and not yes and not typer.confirm(f"Delete {what}?", default=False):
            raise UserInputError("nothing was deleted (add --yes to skip the question).")
        removed = _history.clear_cache(store, task)
    console.print(f"removed {plural(removed, 'cached result')}" + (f" of {task}" if task else ""))
