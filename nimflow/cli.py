"""The `nimflow` command line (also `python -m nimflow`)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree
from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from nimflow import _serialize
from nimflow._exceptions import NimflowError, RunFailedError, UserInputError
from nimflow._loader import pick_workflow
from nimflow._store import CacheEntry, Run, Store, TaskRun
from nimflow._workflow import WorkflowSpec
from nimflow.actors.cli import actors_app, secret_app
from nimflow.actors.overrides import parse_assignment
from nimflow.testing.cli import fake_server

app = typer.Typer(
    help="Async batch-inference workflows: cached tasks, map_task, warm model servers, SQLite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect or clear cached task results.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
app.add_typer(actors_app, name="actors")
app.add_typer(secret_app, name="secret")
app.command("fake-server")(fake_server)

console = Console()
err_console = Console(stderr=True)


def main() -> None:
    try:
        app()
    except NimflowError as exc:
        err_console.print(f"[red bold]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


# --------------------------------------------------------------------------------------------------
# nimflow run


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def run(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="A Python file that defines a @workflow.", show_default=False)
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
    show_help: Annotated[
        bool, typer.Option("--help", "-h", help="Show this message (with FILE: its inputs).")
    ] = False,
) -> None:
    """Run a workflow: nimflow run FILE [WORKFLOW] [--input value ...].

    WORKFLOW is needed only when FILE defines several.
    The workflow's inputs become options, parsed from its signature: `--top-k 10`, `--flag/--no-flag`,
    and JSON for lists, dicts and models (`--ids '["a", "b"]'`).
    """
    if file is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0 if show_help else 2)
    args = list(ctx.args)
    # WORKFLOW is read here rather than declared: declared, it would swallow the value of an input option.
    workflow = args.pop(0) if args and not args[0].startswith("-") else None
    wf = pick_workflow(file, workflow)
    command = _inputs_command(wf, file)
    if show_help:
        with click.Context(command, info_name=f"nimflow run {file}") as help_ctx:
            typer.echo(command.get_help(help_ctx))
        return
    try:
        inputs = command.main(args, prog_name=f"nimflow run {file}", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise typer.Exit(2) from exc
    servers = dict(parse_assignment(item) for item in server or [])
    if placement:
        from nimflow.actors.launchers.ray import place

        place(wf, placement)
    if every is not None and every <= 0:
        raise UserInputError(f"--every {every:g}: give the seconds between run starts, more than 0.")
    _setup_logging()
    next_start = time.monotonic()
    while True:
        try:
            _run_once(wf, inputs, use_cache=not no_cache, servers=servers, file=str(file))
        except typer.Exit as exc:
            if every is None or exc.exit_code == 130:
                raise
            # On a schedule a failed run is recorded and reported; the next one still starts.
        if every is None:
            return
        # A fixed rate: runs start every `every` seconds; a run that overruns skips the missed starts.
        next_start += every
        now = time.monotonic()
        if next_start < now:
            next_start = now + (every - (now - next_start) % every)
        console.print(f"[dim]next run in {next_start - now:.1f} s (Ctrl-C to stop)[/]")
        try:
            time.sleep(next_start - now)
        except KeyboardInterrupt:
            return


def _run_once(
    wf: WorkflowSpec[..., Any], inputs: dict[str, Any], *, use_cache: bool, servers: dict[str, str], file: str
) -> None:
    from nimflow._progress import live_progress
    from nimflow._run import run as run_workflow

    progress = functools.partial(live_progress, console)
    try:
        result = run_workflow(
            wf,
            inputs=inputs,
            use_cache=use_cache,
            servers=servers,
            progress=progress,
            console=console,
            source_file=file,
        )
    except RunFailedError as exc:
        failed = getattr(exc, "result", None)
        if failed is not None:
            _print_failures(failed.failures, show_traceback=True)
        err_console.print(f"[red bold]run {exc.run_id} failed.[/] Details: nimflow show {exc.run_id}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        err_console.print("[yellow]cancelled[/]: finished items are saved; run the same command to resume.")
        raise typer.Exit(130) from None
    _print_summary(result)


def _print_summary(result: Any) -> None:
    if result.failures:
        _print_failures(result.failures, show_traceback=False)
    for actor, how in result.served_by.items():
        console.print(f"[yellow]{actor}[/]: {how}")
    console.print(
        f"[green bold]run {result.run_id} succeeded[/] in {result.seconds:.1f} s: "
        f"{len(result.nodes)} nodes, {result.items} map items, {result.cached} cache hits, "
        f"{len(result.failures)} failures, {result.tokens} tokens. "
        f"Outputs: nimflow outputs {result.run_id}"
    )


def _print_failures(failures: list[Any], *, show_traceback: bool) -> None:
    for failure in failures[:5]:
        err_console.print(
            f"[red]failed[/] {escape(failure.where())}: {escape(failure.error)}", highlight=False
        )
    unexpected = [f for f in failures if not f.expected]
    if show_traceback and unexpected:
        err_console.print(unexpected[0].traceback.rstrip(), highlight=False, markup=False)
    if len(failures) > 5:
        err_console.print(f"... and {len(failures) - 5} more failures")


def _setup_logging() -> None:
    level = os.environ.get("NIMFLOW_LOG", "WARNING").upper()
    handler = RichHandler(console=err_console, show_path=False, show_time=False)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s")


def _accepts_text(hint: Any, text: str) -> bool:
    """Whether the input takes this text as it is (a str, str | None, a Literal); else it is JSON."""
    try:
        _serialize.validate(text, hint, "input")
    except Exception:
        return False
    return True


def _inputs_command(wf: WorkflowSpec[..., Any], file: Path) -> click.Command:
    """A click command whose options are the workflow's inputs, as `pyflyte run` builds them."""
    params: list[click.Parameter] = []
    for name, param in wf.signature.parameters.items():
        hint = wf.input_hints[name]
        flag = name.replace("_", "-")
        names = [f"--{flag}"] + ([f"--{name}"] if flag != name else [])
        required = param.default is param.empty
        default = None if required else param.default
        help_text = f"{_serialize.type_name(hint)}" + ("" if required else f" (default: {default!r})")
        if hint is bool:
            params.append(
                click.Option([f"--{flag}/--no-{flag}"], default=default, required=required, help=help_text)
            )
            continue
        click_type: Any = {int: click.INT, float: click.FLOAT, str: click.STRING}.get(hint, click.STRING)
        params.append(
            click.Option(
                names, type=click_type, required=required, default=None, help=help_text, show_default=False
            )
        )

    def callback(**values: Any) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for name, raw in values.items():
            if raw is None:
                continue
            if isinstance(raw, str) and not _accepts_text(wf.input_hints[name], raw):
                with contextlib.suppress(json.JSONDecodeError):  # validation says what was expected
                    raw = json.loads(raw)
            inputs[name] = raw
        from nimflow._run import validate_inputs

        try:
            return validate_inputs(wf, inputs)
        except UserInputError as exc:
            raise click.UsageError(str(exc)) from exc

    return click.Command(
        name=wf.name, params=params, callback=callback, help=(wf.fn.__doc__ or f"Run workflow {wf.name}.")
    )


# --------------------------------------------------------------------------------------------------
# Inspecting runs


def _store() -> Store:
    return Store.open()


def _find_run(store: Store, run_id: str | None) -> Run:
    with store.session() as session:
        if run_id is None:
            latest = session.exec(select(Run).order_by(col(Run.started_at).desc()).limit(1)).first()
            if latest is None:
                raise UserInputError("no runs yet. Start one with: nimflow run FILE")
            return latest
        matches = session.exec(select(Run).where(col(Run.id).startswith(run_id)).limit(2)).all()
    if not matches:
        raise UserInputError(f"no run {run_id!r}. List runs with: nimflow runs")
    if len(matches) > 1:
        raise UserInputError(f"run id {run_id!r} is ambiguous; give more characters.")
    return matches[0]


def _duration(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    return f"{(end or time.time()) - start:.2f}s"


def _status(row: Run) -> str:
    """A run still marked running whose process is gone was killed (kill -9, a crash, a reboot)."""
    if row.status == "running" and row.pid is not None:
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return "interrupted"
        except PermissionError:
            pass
    return row.status


_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "yellow",
    "skipped": "dim",
    "cancelled": "magenta",
    "interrupted": "magenta",
}


@app.command()
def runs(limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20) -> None:
    """List recent runs."""
    store = _store()
    with store.session() as session:
        rows = session.exec(select(Run).order_by(col(Run.started_at).desc()).limit(limit)).all()
    table = Table("run", "workflow", "status", "started", "duration", "error")
    for row in rows:
        status = _status(row)
        style = _STATUS_STYLE.get(status, "")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started_at))
        table.add_row(
            row.id,
            row.workflow,
            f"[{style}]{status}[/]",
            started,
            _duration(row.started_at, row.ended_at),
            escape((row.error or "")[:80]),
        )
    console.print(table)


@app.command()
def show(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or a prefix); default: the latest.")] = None,
) -> None:
    """Show a run as a tree: status, timings, attempts, cache hits, tokens and errors per node."""
    store = _store()
    row = _find_run(store, run_id)
    with store.session() as session:
        task_runs = session.exec(select(TaskRun).where(TaskRun.run_id == row.id)).all()
    status = _status(row)
    style = _STATUS_STYLE.get(status, "")
    tree = Tree(
        f"[bold]run {row.id}[/] {row.workflow} [{style}]{status}[/] {_duration(row.started_at, row.ended_at)}"
        + (f"  inputs {row.inputs}" if row.inputs != "{}" else "")
    )
    if row.served_by:
        for actor, how in json.loads(row.served_by).items():
            tree.add(f"[yellow]{actor}[/]: {how}")
    nodes = sorted((t for t in task_runs if t.item is None), key=lambda t: int(t.node[1:]))
    items_by_node: dict[str, list[TaskRun]] = {}
    for t in task_runs:
        if t.item is not None:
            items_by_node.setdefault(t.node, []).append(t)
    for node in nodes:
        items = items_by_node.get(node.node, [])
        st = _STATUS_STYLE.get(node.status, "")
        label = f"{node.node} [bold]{node.task}[/] [{st}]{node.status}[/] {_duration(node.started_at, node.ended_at)}"
        if items:
            hits = sum(t.cache_hit for t in items)
            failed = [t for t in items if t.status == "failed"]
            tokens = sum(t.prompt_tokens + t.completion_tokens for t in items)
            retries = sum(t.retries for t in items)
            label += f"  {len(items)} items, {hits} cached, {len(failed)} failed, attempts {sum(t.attempts for t in items)}"
            label += f", {tokens} tokens" if tokens else ""
            label += f", {retries} retries" if retries else ""
        else:
            label += "  cached" if node.cache_hit else f"  attempts {node.attempts}"
            tokens = node.prompt_tokens + node.completion_tokens
            label += f", {tokens} tokens" if tokens else ""
        branch = tree.add(label)
        if node.error:
            branch.add(f"[red]{escape(_last_line(node.error))}[/]")
        for item in sorted((t for t in items if t.status == "failed"), key=lambda t: t.item or 0)[:10]:
            branch.add(f"[red]item {item.item}: {escape(_last_line(item.error or ''))}[/]")
    if row.error and row.status != "succeeded":
        tree.add(f"[red]{escape(row.error)}[/]")
    console.print(tree)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@app.command()
def outputs(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or a prefix); default: the latest.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outputs as JSON.")] = False,
) -> None:
    """Print a run's outputs."""
    row = _find_run(_store(), run_id)
    if row.outputs is None:
        raise UserInputError(
            f"run {row.id} has no outputs (status: {row.status}). See: nimflow show {row.id}"
        )
    data = json.loads(row.outputs)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        console.print_json(data=data)


@app.command()
def kill(run_id: Annotated[str, typer.Argument(help="Run id (or a prefix).")]) -> None:
    """Cancel a running run from another terminal (finished items stay saved)."""
    row = _find_run(_store(), run_id)
    if row.status != "running" or row.pid is None:
        raise UserInputError(f"run {row.id} is not running (status: {row.status}).")
    try:
        os.kill(row.pid, signal.SIGINT)
    except ProcessLookupError as exc:
        raise UserInputError(f"run {row.id} is marked running but its process {row.pid} is gone.") from exc
    console.print(f"sent Ctrl-C to run {row.id} (pid {row.pid})")


# --------------------------------------------------------------------------------------------------
# nimflow cache


@cache_app.command("ls")
def cache_ls() -> None:
    """Cached results per task: entries, versions, size, newest."""
    store = _store()
    with store.session() as session:
        rows = session.execute(
            sa_select(
                col(CacheEntry.task),
                func.count(),
                func.sum(func.length(CacheEntry.output)),
                func.max(CacheEntry.created_at),
            ).group_by(CacheEntry.task)
        ).all()
        versions: dict[str, list[str]] = {}
        for task_name, version in session.execute(
            sa_select(col(CacheEntry.task), col(CacheEntry.cache_version)).distinct()
        ):
            versions.setdefault(task_name, []).append(version)
    table = Table("task", "entries", "versions", "bytes", "newest")
    for task_name, count, size, newest in rows:
        table.add_row(
            task_name,
            str(count),
            ", ".join(sorted(versions[task_name])),
            str(size),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(newest)),
        )
    console.print(table)


@cache_app.command("clear")
def cache_clear(
    task: Annotated[str | None, typer.Argument(help="Only this task (default: everything).")] = None,
) -> None:
    """Delete cached results, of one task or of all."""
    store = _store()
    with store.session() as session:
        stmt = delete(CacheEntry)
        if task is not None:
            stmt = stmt.where(col(CacheEntry.task) == task)
        removed = session.exec(stmt).rowcount
        session.commit()
    if task is not None and not removed:
        raise UserInputError(f"no cached results for task {task!r}. See: nimflow cache ls")
    console.print(f"removed {removed} cached results" + (f" of {task}" if task else ""))
