"""The typer app behind `nimflow`: the lazily loaded command groups, and `run` and the read
commands (plain click, see nimflow._cli_click) hung on it through forwarders, so that `--help`
lists them all and `app` runs every command.

nimflow.cli builds it on first use: `run` and the read commands are run without it.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

from nimflow._cli_read import read_group
from nimflow._cli_run import RUN_SETTINGS, run

__all__ = ["app"]

# The order `nimflow --help` lists the commands in: running, inspecting, managing, testing.
_ORDER = [
    "run", "batch", "serve", "runs", "show", "outputs", "kill", "cache", "artifacts", "launchplans",
    "actors", "secret", "batch-server", "fake-server",
]  # fmt: skip

# Commands whose module loads only when the command is used: the read commands, `--help` and a
# cached run do not pay for the openai, aiohttp, Docker and batch stacks. `--help` lists them with
# the summary here (a test holds it equal to the command's own).
# name -> (module, attribute, summary): the attribute is a typer.Typer (a group) or a command function.
_LAZY: dict[str, tuple[str, str, str]] = {
    "batch": ("nimflow.batch.cli", "batch_command", "Answer an OpenAI Batch file (resumable)."),
    "batch-server": ("nimflow.batch.cli", "batch_server_command", "A local OpenAI Files and Batches API."),
    "actors": ("nimflow.actors.cli", "actors_app", "Model server replicas kept warm for actor tasks."),
    "secret": ("nimflow.actors.cli", "secret_app", "Secrets for model servers (NGC_API_KEY, HF_TOKEN, ...)."),
    "fake-server": (
        "nimflow.testing.cli",
        "fake_server",
        "Run the fake OpenAI-compatible server (for tests, demos and benchmarks).",
    ),
    "serve": ("nimflow._plans_cli", "serve", "Run the launch plans of FILES (schedules, triggers)."),
    "launchplans": (
        "nimflow._plans_cli",
        "launchplans_app",
        "List launch plans; activate or deactivate them.",
    ),
    "artifacts": ("nimflow._plans_cli", "artifacts_app", "List artifact versions and their lineage."),
}


def _lazy_command(name: str) -> Any:  # a click command (typer vendors its own click)
    module, attribute, _summary = _LAZY[name]
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

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """click's listing, but a lazy command not loaded yet shows its summary from _LAZY."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            if name in _LAZY and name not in self.commands:
                rows.append((name, click.Command(name, help=_LAZY[name][2]).get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=_Ordered,
    help="Async batch-inference workflows: cached tasks, map_task, warm model servers, SQLite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _forwarder(name: str, command: click.Command) -> Any:
    """A typer command that hands its arguments to the click command of that name."""

    def forward(ctx: typer.Context) -> Any:
        return command.main(args=ctx.args, prog_name=f"nimflow {name}", standalone_mode=False)

    return forward


for _name, _command in {"run": run, **read_group.commands}.items():
    app.command(_name, help=_command.help, context_settings=RUN_SETTINGS)(_forwarder(_name, _command))
