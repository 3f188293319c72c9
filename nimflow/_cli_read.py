"""The commands that read (and clear) what runs recorded: runs, show, outputs, kill, cache.

They go through the read API, nimflow._history, and print with nimflow._cli_views. They are
plain click commands, not typer ones: typer converts every parameter through a pydantic
TypeAdapter, and importing pydantic for that was half of what `nimflow runs` cost. The help
looks as typer's does (an Arguments section, `<int>` metavars); nimflow.cli dispatches to
`read_group` without importing typer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Sequence

import click

from nimflow import _history
from nimflow._cli_views import cache_table, human_outputs, plural, run_tree, runs_table
from nimflow._console import console, print_table
from nimflow._exceptions import UserInputError
from nimflow._reader import open_reader
from nimflow._status import Status

__all__ = ["READ_COMMANDS", "read_group"]


class _Argument(click.Argument):
    """An argument with a help line (click's have none), listed under "Arguments" as typer does."""

    def __init__(self, param_decls: Sequence[str], *, help: str, required: bool = False) -> None:
        name = param_decls[0]
        super().__init__(param_decls, required=required, metavar=("{%s}" if required else "[%s]") % name)
        self.help = help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str]:
        return f"{self.name} <str>", (self.help or "") + ("  [required]" if self.required else "")


class _Command(click.Command):
    """typer's help layout: the arguments, with their help, before the options."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        rows = [p.get_help_record(ctx) for p in self.get_params(ctx) if isinstance(p, _Argument)]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)
        self.format_options(ctx, formatter)
        self.format_epilog(ctx, formatter)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they are used, as typer lists them


def _command(fn: Callable[..., None]) -> _Command:
    return click.command(cls=_Command)(fn)


_RUN_ID = "Run id (or a prefix); default: the latest."


@_command
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


@_command
@click.argument("run_id", cls=_Argument, help=_RUN_ID)
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


@_command
@click.argument("run_id", cls=_Argument, help=_RUN_ID)
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


@_command
@click.argument("run_id", cls=_Argument, help="Run id (or a prefix).", required=True)
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


@click.group("cache", cls=_Group, no_args_is_help=True)
def cache_group() -> None:
    """Inspect or clear cached task results."""


@cache_group.command("ls", cls=_Command)
def cache_ls() -> None:
    """List cached results per task.

    Entries, cache versions, size and newest entry; the task names are those `cache clear` takes.
    """
    with open_reader() as store:
        rows = _history.cache_summary(store)
    print_table(console, cache_table(rows))


@cache_group.command("clear", cls=_Command)
@click.argument(
    "task", cls=_Argument, help="The task whose results to delete (as `nimflow cache ls` names it)."
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


# What `nimflow NAME ...` dispatches here; nimflow --help lists them with the typer commands.
read_group = click.Group("nimflow", commands=[runs, show, outputs, kill, cache_group])
READ_COMMANDS = tuple(read_group.commands)
