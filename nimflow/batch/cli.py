"""``nimflow batch`` and ``nimflow batch-server`` (typer); the work is done in ``_run`` and ``_api``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from nimflow._liveness import few_malloc_arenas

SERVER_HELP = "What serves the requests: fake, endpoint:URL, vllm:MODEL, nim:IMAGE or container:IMAGE."


def batch_command(
    input: Annotated[Path, typer.Argument(help="OpenAI Batch input file (.jsonl), one request a line.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the output lines.")],
    server: Annotated[str, typer.Option(help=SERVER_HELP)],
    model: Annotated[
        str | None, typer.Option(help="Model for bodies without one (default: the server's).")
    ] = None,
    replicas: Annotated[int, typer.Option(help="Replicas of the server.")] = 1,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight per replica.")] = None,
    errors: Annotated[Path | None, typer.Option(help="Also write the failed lines here.")] = None,
    ttl: Annotated[float, typer.Option(help="Seconds the server stays warm after the batch.")] = 900,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Send every request again.")] = False,
) -> None:
    """Answer an OpenAI Batch file (resumable).

    A rerun sends only the requests not yet answered.
    """
    from rich.console import Console

    from nimflow._exceptions import NimflowError
    from nimflow._progress import live_progress

    from ._run import run_batch_file

    console = Console(stderr=True)
    try:
        summary = run_batch_file(
            input,
            output,
            server=server,
            model=model,
            replicas=replicas,
            concurrency=concurrency,
            ttl=ttl,
            use_cache=not no_cache,
            errors_path=errors,
            progress=functools.partial(live_progress, console),
        )
    except KeyboardInterrupt:
        console.print("[yellow]cancelled[/]: answers so far are stored; run the same command to resume.")
        raise typer.Exit(130) from None
    except NimflowError as error:
        console.print(f"[red]error[/]: {error}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    for actor, how in summary.served_by.items():
        console.print(f"[yellow]{actor}[/]: {how}")
    console.print(f"[green bold]batch done[/]: {summary.text()}; output: {output}", highlight=False)


def batch_server_command(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    server: Annotated[str, typer.Option(help=SERVER_HELP)] = "fake",
    host: Annotated[
        str, typer.Option(help="Address to listen on (keep 127.0.0.1 unless others need it).")
    ] = "127.0.0.1",
    token: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer TOKEN'.", envvar="NIMFLOW_BATCH_TOKEN")
    ] = None,
    ttl: Annotated[float, typer.Option(help="Seconds the model server stays warm after a batch.")] = 900,
) -> None:
    """A local OpenAI Files and Batches API.

    Serves /v1/files and /v1/batches on local model servers.

    Code written for client.files.create(...) and client.batches.create(...) of the official
    openai client runs unchanged against it. Batches are kept in the nimflow database and resume
    after a restart.
    """
    from ._api import serve

    few_malloc_arenas()
    serve(server, host=host, port=port, token=token, ttl=ttl)
