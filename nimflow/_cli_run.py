"""`nimflow run`: its options, one run with its progress and summary, the `--every` loop.

The workflow's inputs become options through nimflow._cli_inputs; the run itself is nimflow._run.
Everything heavy is imported inside the command, so the other commands do not pay for it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from nimflow._cli_click import Argument, command
from nimflow._cli_views import plural
from nimflow._console import console, err_console
from nimflow._exceptions import RunFailedError, UserInputError
from nimflow._history import error_message

if TYPE_CHECKING:
    from nimflow._workflow import WorkflowSpec
    from nimflow.actors.overrides import ActorOverride

__all__ = ["RUN_SETTINGS", "run"]


# The workflow's own inputs are parsed from its signature, after FILE: pass them through.
RUN_SETTINGS: dict[str, Any] = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],
}


@command(**RUN_SETTINGS)
@click.argument(
    "file",
    cls=Argument,
    type=click.Path(path_type=Path),
    metavar="FILE [WORKFLOW]",
    kind="path",
    help="A Python file that defines a @workflow (then WORKFLOW, its name, if it defines several).",
)
@click.option("--no-cache", is_flag=True, help="Recompute every task (results are cached anew).")
@click.option(
    "--server",
    multiple=True,
    metavar="ACTOR=SPEC",
    help="Serve an actor another way: fake | endpoint:URL | process:CMD. Repeatable.",
)
@click.option(
    "--model", multiple=True, metavar="ACTOR=NAME", help="The model an actor's server serves. Repeatable."
)
@click.option(
    "--api-key",
    multiple=True,
    metavar="ACTOR=SECRET_NAME",
    help="The secret holding an endpoint's API key (its name).",
)
@click.option(
    "--request-timeout", multiple=True, metavar="ACTOR=SECONDS", help="Bound each model request of an actor."
)
@click.option(
    "--replicas",
    multiple=True,
    metavar="ACTOR=N|MIN:MAX",
    help="An actor's replicas, or bounds to scale between.",
)
@click.option(
    "--placement",
    multiple=True,
    metavar="ACTOR=WHERE",
    help="Place an actor's replicas elsewhere: ray | ray:ADDRESS (a Ray cluster). Repeatable.",
)
@click.option("--every", type=float, metavar="SECONDS", help="Run again at this fixed rate until Ctrl-C.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Compute cached maps' items in N processes.",
)
@click.option("--help", "-h", "show_help", is_flag=True, help="Show this message (with FILE: its inputs).")
@click.pass_context
def run(
    ctx: click.Context,
    file: Path | None,
    no_cache: bool,
    server: tuple[str, ...],
    model: tuple[str, ...],
    api_key: tuple[str, ...],
    request_timeout: tuple[str, ...],
    replicas: tuple[str, ...],
    placement: tuple[str, ...],
    every: float | None,
    workers: int,
    show_help: bool,
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
        click.echo(ctx.get_help())
        return 0 if show_help else 2
    args = list(ctx.args)
    # WORKFLOW is read here rather than declared: declared, it would swallow the value of an input option.
    workflow = args.pop(0) if args and not args[0].startswith("-") else None
    wf = pick_workflow(file, workflow)
    parser = inputs_command(wf, file)
    if show_help:
        with click.Context(parser, info_name=f"nimflow run {file}") as help_ctx:
            click.echo(parser.get_help(help_ctx))
        return 0
    inputs = parser.main(args, prog_name=f"nimflow run {file}", standalone_mode=False)
    servers = parse_actor_flags(
        server=server, model=model, api_key=api_key, request_timeout=request_timeout, replicas=replicas
    )
    if placement:
        from nimflow.actors.launchers.ray import place

        place(wf, list(placement))
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
