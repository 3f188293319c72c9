"""The commands that read (and clear) what runs recorded: runs, show, outputs, kill, cache.

They go through the read API, nimflow._history, and print with nimflow._cli_views. They are
plain click commands (nimflow._cli_click says why); nimflow.cli runs them without typer.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from nimflow import _history
from nimflow._cli_click import Argument, Command, Group, command
from nimflow._cli_views import cache_table, human_outputs, plural, run_tree, runs_table
from nimflow._console import console, print_table
from nimflow._exceptions import UserInputError
from nimflow._reader import open_reader
from nimflow._status import Status

__all__ = ["read_group"]


_RUN_ID = "Run id (or a prefix); default: the latest."


@command()
@click.option(
    "--limit", "-n", type=int, default=20, show_default=True, metavar="<int>", help="How many, newest first."
)
def runs(limit: int) -> None:
    """List recent runs.

    Newest first: status (interrupted for a run whose process died), start, duration, first error.
    """
    with open_reader() as store:
        rows = _history.list_runs(store, limit)
    print_table(console, runs_table(rows))


@command()
@click.argument("run_id", cls=Argument, help=_RUN_ID)
@click.option(
    "--traceback",
    "tracebacks",
    is_flag=True,
    help="Add the Python traceback under each failed node and item.",
)
def show(run_id: str | None, tracebacks: bool) -> None:
    """Show a run as a tree of nodes.

    Per node: status, duration, attempts, cache hits, tokens, and the whole message of each failure.
    """
    with open_reader() as store:
        info = _history.find_run(store, run_id)
        rows = _history.task_runs(store, info)
        events = _history.scale_events(store, info.id)
    console.print(run_tree(info, rows, tracebacks=tracebacks, scale_events=events))


@command()
@click.argument("run_id", cls=Argument, help=_RUN_ID)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON, for programs.")
def outputs(run_id: str | None, as_json: bool) -> None:
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


@command()
@click.argument("run_id", cls=Argument, help="Run id (or a prefix).", required=True)
def kill(run_id: str) -> None:
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


@click.group("cache", cls=Group, no_args_is_help=True)
def cache_group() -> None:
    """Inspect or clear cached task results."""


@cache_group.command("ls", cls=Command)
def cache_ls() -> None:
    """List cached results per task.

    Entries, cache versions, size and newest entry; the task names are those `cache clear` takes.
    """
    with open_reader() as store:
        rows = _history.cache_summary(store)
    print_table(console, cache_table(rows))


@cache_group.command("clear", cls=Command)
@click.argument(
    "task", cls=Argument, help="The task whose results to delete (as `nimflow cache ls` names it)."
)
@click.option("--all", "all_", is_flag=True, help="Delete the cached results of every task.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(task: str | None, all_: bool, yes: bool) -> None:
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
        if count and not yes and not click.confirm(f"Delete {what}?", default=False):
            raise UserInputError("nothing was deleted (add --yes to skip the question).")
        removed = _history.clear_cache(store, task)
    console.print(f"removed {plural(removed, 'cached result')}" + (f" of {task}" if task else ""))


# nimflow.cli runs these without typer; nimflow --help lists them with the typer commands.
read_group = click.Group("nimflow", commands=[runs, show, outputs, kill, cache_group])
