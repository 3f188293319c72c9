"""The `nimflow` command line (also `python -m nimflow`): it parses and prints, nothing more.

The run command is nimflow._cli_run, the read commands nimflow._cli_read; this module wires them
(and the lazily loaded command groups) into one app. Every error a user can cause prints as one `error: ...` line on stderr and exits
1 (2 for a wrong command line); NIMFLOW_LOG=DEBUG adds the traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from nimflow._cli_read import cache_app, kill, outputs, runs, show
from nimflow._cli_run import RUN_SETTINGS, run
from nimflow._console import err_console
from nimflow._exceptions import NimflowError

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


app.command(context_settings=RUN_SETTINGS)(run)
for _command in (runs, show, outputs, kill):
    app.command()(_command)
app.add_typer(cache_app, name="cache")
