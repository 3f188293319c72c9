"""The `nimflow` command line (also `python -m nimflow`): it parses and prints, nothing more.

Reads go through nimflow._history, runs through nimflow._run, the `--every` loop through
nimflow._every. Every error a user can cause prints as one `error: ...` line on stderr and exits
1 (2 for a wrong command line); NIMFLOW_LOG=DEBUG adds the traceback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from nimflow import _history
from nimflow._cli_views import cache_table, human_outputs, plural, run_tree, runs_table
from nimflow._console import make_console, print_table
from nimflow._exceptions import NimflowError, RunFailedError, UserInputError
from nimflow._history import error_message
from nimflow._status import Status
from nimflow._store import Store

if TYPE_CHECKING:
    from nimflow._workflow import WorkflowSpec
    from nimflow.actors.overrides import ActorOverride

# The order `nimflow --help` lists the commands in: running, inspecting, managing, testing.
_ORDER = [
    "run", "batch", "serve", "runs", "show", "outputs", "kill", "cache", "artifacts", "launchplans",
    "actors", "secret", "batch-server", "fake-server",
]  # fmt: skip

# Commands whose module loads only when the command is used (or `--help` lists it): the read
# commands and a cached run do not pay for the openai, aiohttp, Docker and batch stacks.
# name -> (module, attribute): a typer.Typer (a group of commands) or a command function.
_LAZY: dict[str, tuple[str, str]] = {
    "batch": ("nimflow.batch.cli", "batch_command"),
    "batch-server": ("nimflow.batch.cli", "batch_server_command"),
    "actors": ("nimflow.actors.cli", "actors_app"),
    "secret": ("nimflow.actors.cli", "secret_app"),
    "fake-server": ("nimflow.testing.cli", "fake_server"),
    "serve": ("nimflow._plans_cli", "serve"),
    "launchplans": ("nimflow._plans_cli", "launchplans_app"),
    "artifacts": ("nimflow._plans_cli", "artifacts_app"),
}


def _lazy_command(name: str) -> Any:  # a click command (typer vendors its own click)
    module, attribute = _LAZY[name]
    target = getattr(importlib.import_module(module), attribute)
    # Hung on a parent made like `app`, so it reads as if it had been added to `app` itself.
    holder = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    holder.command("-")(lambda: None)  # a second command, so that `holder` is a group
    return typer.main.get_group(holder).commands[name]


class _Ordered(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = list(dict.fromkeys([*super().list_commands(ctx), *_LAZY]))
        return sorted(names, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            self.add_command(_lazy_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_Ordered,
    help="Async batch-inference workflows: cached tasks, map_task, warm model servers, SQLite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cache_app = typer.Typer(help="Inspect or clear cached task results.", no_args_is_help=True)

console = make_console()
err_console = make_console(stderr=True)


def main(argv: Sequence[str] | None = None) -> None:
    code = invoke(argv)
    # A cancelled run abandons the sync task calls still in their threads (they cannot be
    # stopped); everything finished is stored by now, so exit without waiting for them.
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def invoke(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code; every error is printed in one style."""
    try:
        code = app(args=list(argv) if argv is not None else None, prog_name="nimflow", standalone_mode=False)
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `nimflow cache`: the help is the answer
            typer.echo(exc.format_message())
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        _error(exc.format_message() + hint)
        return 2
    except _CLICK_ERRORS as exc:
        _error(exc.format_message())
        return int(getattr(exc, "exit_code", 1))
    except _ABORTS:
        _error("aborted")
        return 1
    except NimflowError as exc:
        _error(str(exc), exc)
        return 1
    return code if isinstance(code, int) else 0


def _click_classes(name: str) -> tuple[Any, ...]:
    """A click exception class, and typer's copy of it (typer vendors click from 0.20 on)."""
    classes: list[Any] = [getattr(click.exceptions, name)]
    with contextlib.suppress(ImportError):
        from typer._click import exceptions as typer_click

        classes.append(getattr(typer_click, name))
    return tuple(classes)


_USAGE_ERRORS = _click_classes("UsageError")
_CLICK_ERRORS = _click_classes("ClickException")
_ABORTS = (click.Abort, typer.Abort)


def _error(message: str, exc: BaseException | None = None) -> None:
    if exc is not None and os.environ.get("NIMFLOW_LOG", "").upper() == "DEBUG":
        err_console.print("".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False)
    err_console.print(f"[red bold]error:[/] {escape(message)}", highlight=False)


@contextmanager
def _store() -> Iterator[Store]:
    store = Store.open()
    try:
        yield store
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------
# nimflow run


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def run(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(
            help="A Python file that defines a @workflow (then WORKFLOW, its name, if it defines several).",
            metavar="FILE [WORKFLOW]",
            show_default=False,
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Recompute every task (results are cached anew).")
    ] = False,
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            metavar="ACTOR=SPEC",
            help="Serve an actor another way: fake | endpoint:URL | process:CMD. Repeatable.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", metavar="ACTOR=NAME", help="The model an actor's server serves. Repeatable."),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key", metavar="ACTOR=SECRET_NAME", help="The secret holding an endpoint's API key (its name)."
        ),
    ] = None,
    request_timeout: Annotated[
        list[str] | None,
        typer.Option("--request-timeout", metavar="ACTOR=SECONDS", help="Bound each model request of an actor."),
    ] = None,
    replicas: Annotated[
        list[str] | None,
        typer.Option("--replicas", metavar="ACTOR=N|MIN:MAX", help="An actor's replicas, or bounds to scale between."),
    ] = None,
    placement: Annotated[
        list[str] | None,
        typer.Option(
            "--placement",
            metavar="ACTOR=WHERE",
            help="Place an actor's replicas elsewhere: ray | ray:ADDRESS (a Ray cluster). Repeatable.",
        ),
    ] = None,
    every: Annotated[
        float | None,
        typer.Option("--every", metavar="SECONDS", help="Run again at this fixed rate until Ctrl-C."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", metavar="N", min=1, help="Compute cached maps' items in N processes."),
    ] = 1,
    show_help: Annotated[
        bool, typer.Option("--help", "-h", help="Show this message (with FILE: its inputs).")
    ] = False,
) -> int:
    """Run a workflow; its inputs are options.

    nimflow run FILE [WORKFLOW] [--input value ...]. WORKFLOW is needed only when FILE defines several.
    The workflow's inputs become options, parsed from its signature: `--top-k 10`, `--flag/--no-flag`,
    and JSON for lists, dicts and models (`--ids '["a", "b"]'`).
    """
    from nimflow._cli_inputs import inputs_command
    from nimflow._every import run_every
    from nimflow._loader import pick_workflow
    from nimflow.actors.overrides import parse_actor_flags

    if file is None:
        typer.echo(ctx.get_help())
        return 0 if show_help else 2
    args = list(ctx.args)
    # WORKFLOW is read here rather than declared: declared, it would swallow the value of an input option.
    workflow = args.pop(0) if args and not args[0].startswith("-") else None
    wf = pick_workflow(file, workflow)
    command = inputs_command(wf, file)
    if show_help:
        with click.Context(command, info_name=f"nimflow run {file}") as help_ctx:
            typer.echo(command.get_help(help_ctx))
        return 0
    inputs = command.main(args, prog_name=f"nimflow run {file}", standalone_mode=False)
    servers = parse_actor_flags(
        server=server or [], model=model or [], api_key=api_key or [], request_timeout=request_timeout or [],
        replicas=replicas or [],
    )
    if placement:
        from nimflow.actors.launchers.ray import place

        place(wf, placement)
    _setup_logging()
    once = functools.partial(
        _run_once, wf, inputs, use_cache=not no_cache, servers=servers, file=str(file), workers=workers
    )
    if every is None:
        return once()
    return run_every(
        every, once, lambda wait: console.print(f"[dim]next run in {wait:.1f} s (Ctrl-C to stop)[/]")
    )


def _run_once(
    wf: WorkflowSpec[..., Any],
    inputs: dict[str, Any],
    *,
    use_cache: bool,
    servers: dict[str, ActorOverride],
    file: str,
    workers: int = 1,
) -> int:
    """One run, its progress and its summary; the exit code (0, 1 failed, 130 Ctrl-C)."""
    from nimflow._every import CANCELLED
    from nimflow._progress import live_progress
    from nimflow._run import run as run_workflow

    started: list[str] = []

    def progress(run_id: str, states: Any) -> Any:
        started.append(run_id)
        return live_progress(console, run_id, states)

    try:
        result = run_workflow(
            wf,
            inputs=inputs,
            use_cache=use_cache,
            servers=servers,
            progress=progress,
            console=console,
            source_file=file,
            workers=workers,
        )
    except UserInputError as exc:
        if started:
            raise
        # Raised before the run started: the command line was wrong (an input, a --server name).
        raise click.UsageError(str(exc)) from exc
    except RunFailedError as exc:
        if exc.result is not None:
            _print_failures(exc.result.failures, show_traceback=True)
        err_console.print(f"[red bold]run {exc.run_id} failed.[/] Details: nimflow show {exc.run_id}")
        return 1
    except KeyboardInterrupt:
        err_console.print("[yellow]cancelled[/]: finished items are saved; run the same command to resume.")
        return CANCELLED
    _print_summary(result)
    return 0


def _print_summary(result: Any) -> None:
    # What served each actor was said when it became ready; not repeated here.
    if result.failures:
        _print_failures(result.failures, show_traceback=False)
    counts = ", ".join(
        [
            plural(len(result.nodes), "node"),
            plural(result.items, "map item"),
            plural(result.cached, "cache hit"),
            plural(len(result.failures), "failure"),
            plural(result.tokens, "token"),
        ]
    )
    console.print(
        f"[green bold]run {result.run_id} succeeded[/] in {result.seconds:.1f} s: {counts}. "
        f"Outputs: nimflow outputs {result.run_id}"
    )


def _print_failures(failures: list[Any], *, show_traceback: bool) -> None:
    for failure in failures[:5]:
        message = error_message(failure.traceback) if failure.traceback else failure.error
        err_console.print(f"[red]failed[/] {escape(failure.where())}: {escape(message)}", highlight=False)
    unexpected = [f for f in failures if not f.expected]
    if show_traceback and unexpected:
        err_console.print(unexpected[0].traceback.rstrip(), highlight=False, markup=False)
    if len(failures) > 5:
        err_console.print(f"... and {len(failures) - 5} more failures")


def _setup_logging() -> None:
    from rich.logging import RichHandler

    level = os.environ.get("NIMFLOW_LOG", "WARNING").upper()
    handler = RichHandler(console=err_console, show_path=False, show_time=False)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s")


# --------------------------------------------------------------------------------------------------
# Inspecting runs


@app.command()
def runs(limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20) -> None:
    """List recent runs.

    Newest first: status (interrupted for a run whose process died), start, duration, first error.
    """
    with _store() as store:
        rows = _history.list_runs(store, limit)
    print_table(console, runs_table(rows))


@app.command()
def show(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or a prefix); default: the latest.")] = None,
    tracebacks: Annotated[
        bool, typer.Option("--traceback", help="Add the Python traceback under each failed node and item.")
    ] = False,
) -> None:
    """Show a run as a tree of nodes.

    Per node: status, duration, attempts, cache hits, tokens, and the whole message of each failure.
    """
    with _store() as store:
        info = _history.find_run(store, run_id)
        rows = _history.task_runs(store, info)
        from nimflow.actors.records import scale_events

        events = scale_events(store, info.id)
    console.print(run_tree(info, rows, tracebacks=tracebacks, scale_events=events))


@app.command()
def outputs(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or a prefix); default: the latest.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON, for programs.")] = False,
) -> None:
    """Print a run's outputs.

    Readable by default (one list item a line); --json prints JSON for programs.
    """
    with _store() as store:
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


@app.command()
def kill(run_id: Annotated[str, typer.Argument(help="Run id (or a prefix).")]) -> None:
    """Cancel a running run.

    From another terminal; the run stops as on Ctrl-C and its finished items stay saved.
    """
    with _store() as store:
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
    with _store() as store:
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
    with _store() as store:
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


app.add_typer(cache_app, name="cache")
