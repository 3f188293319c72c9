"""The ``nimflow fake-server`` command (typer), its options derived from ``FakeOptions``."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from ._options import FakeOptions, fields, flag_of, from_strings, value_type


def _fake_server(**values: Any) -> None:
    """Run the fake OpenAI-compatible server (for tests, demos and benchmarks).

    Answers are deterministic and made from the prompt's own sentences; a JSON-schema
    response_format gets a valid instance filled from the prompt. Every response carries the
    header x-nimflow-fake: 1. Endpoints: /v1/chat/completions, /v1/completions, /v1/models,
    /v1/health/ready, /health, /v1/metrics; control: /_fake/log, /_fake/faults, /_fake/config.
    """
    from ._server import serve

    try:
        options = from_strings(values)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    try:
        serve(options)
    except OSError as error:  # the port is taken
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None


def _parameters() -> list[inspect.Parameter]:
    defaults = FakeOptions()
    params = []
    for f in fields():
        default = getattr(defaults, f.name)
        kind: Any = value_type(f)
        if isinstance(default, tuple):
            kind, default = list[str] | None, None
        elif f.metadata["parse"] is not None or default is None:
            kind, default = kind | None, None
        option = typer.Option(flag_of(f), help=f.metadata["help"], envvar=f.metadata["env"])
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
            )
        )
    return params


_fake_server.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
fake_server = _fake_server
