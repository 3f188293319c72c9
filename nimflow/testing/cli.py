"""The ``nimflow fake-server`` command (typer); same options as ``python -m nimflow.testing``."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import DEFAULT_MAX_MODEL_LEN, DEFAULT_MODEL
from ._options import HELP


def fake_server(
    host: Annotated[str, typer.Option(help=HELP["host"])] = "127.0.0.1",
    port: Annotated[int, typer.Option(help=HELP["port"])] = 8000,
    model: Annotated[str, typer.Option(help=HELP["model"])] = DEFAULT_MODEL,
    adapter: Annotated[list[str] | None, typer.Option(help=HELP["adapter"])] = None,
    latency_ms: Annotated[float, typer.Option(help=HELP["latency_ms"])] = 0.0,
    latency_per_token_ms: Annotated[float, typer.Option(help=HELP["latency_per_token_ms"])] = 0.0,
    max_concurrency: Annotated[int | None, typer.Option(help=HELP["max_concurrency"])] = None,
    api_key: Annotated[str | None, typer.Option(help=HELP["api_key"], envvar="NIMFLOW_FAKE_API_KEY")] = None,
    faults: Annotated[str | None, typer.Option(help=HELP["faults"])] = None,
    max_model_len: Annotated[int, typer.Option(help=HELP["max_model_len"])] = DEFAULT_MAX_MODEL_LEN,
    seed: Annotated[int, typer.Option(help=HELP["seed"])] = 0,
    log_limit: Annotated[int, typer.Option(help=HELP["log_limit"])] = 10_000,
    log_level: Annotated[str, typer.Option(help=HELP["log_level"])] = "warning",
) -> None:
    """Run the fake OpenAI-compatible server (for tests, demos and benchmarks).

    Answers are deterministic and made from the prompt's own sentences; a JSON-schema
    response_format gets a valid instance filled from the prompt. Every response carries the
    header x-nimflow-fake: 1. Endpoints: /v1/chat/completions, /v1/completions, /v1/models,
    /v1/health/ready, /health, /v1/metrics; control: /_fake/log, /_fake/faults.
    """
    from ._faults import FaultPlan
    from ._server import serve

    try:
        plan = FaultPlan.parse(faults)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--faults") from None
    try:
        serve(
            host=host,
            port=port,
            model=model,
            adapters=adapter or [],
            latency_ms=latency_ms,
            latency_per_token_ms=latency_per_token_ms,
            max_concurrency=max_concurrency,
            api_key=api_key,
            faults=plan,
            max_model_len=max_model_len,
            seed=seed,
            log_limit=log_limit,
            log_level=log_level,
        )
    except (ValueError, OSError) as error:  # a bad knob, or the port is taken
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
