"""Plain click commands that look like typer's: an Arguments section with help, typed labels.

`run` and the read commands are click commands rather than typer ones: typer converts every
parameter through a pydantic TypeAdapter, and importing typer and pydantic for that was half of
what `nimflow runs` cost and a tenth of a fully cached `nimflow run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

__all__ = ["Argument", "Command", "Group", "command"]


class Argument(click.Argument):
    """An argument with a help line, listed under "Arguments" as `NAME <kind>` as typer does."""

    def __init__(
        self,
        param_decls: Sequence[str],
        *,
        help: str,
        required: bool = False,
        metavar: str | None = None,
        kind: str = "str",
        **attrs: Any,
    ) -> None:
        shown = metavar or param_decls[0]
        super().__init__(
            param_decls, required=required, metavar=f"{{{shown}}}" if required else f"[{shown}]", **attrs
        )
        self.help = help
        self._label = f"{shown} <{kind}>"

    def get_help_record(self, ctx: click.Context) -> tuple[str, str]:
        return self._label, (self.help or "") + ("  [required]" if self.required else "")


class Command(click.Command):
    """typer's help layout: the arguments, with their help, before the options."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        rows = [p.get_help_record(ctx) for p in self.get_params(ctx) if isinstance(p, Argument)]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)
        self.format_options(ctx, formatter)
        self.format_epilog(ctx, formatter)


class Group(click.Group):
    command_class = Command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they are used, as typer lists them


def command(**settings: Any) -> Callable[[Callable[..., Any]], Command]:
    def decorate(fn: Callable[..., Any]) -> Command:
        return click.command(cls=Command, context_settings=settings or None)(fn)

    return decorate
