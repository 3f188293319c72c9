"""The `nimflow` command line (also `python -m nimflow`): it parses and prints, nothing more.

The run command is nimflow._cli_run, the read commands nimflow._cli_read: plain click commands,
run from here without importing typer (and the pydantic its parameters need). nimflow._cli_app
wires them and the lazily loaded command groups into one typer app, for `--help` and the rest.
Every error a user can cause prints as one `error: ...` line on stderr and exits 1 (2 for a
wrong command line); NIMFLOW_LOG=DEBUG adds the traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click
from rich.markup import escape

from nimflow._cli_read import read_group
from nimflow._cli_run import run
from nimflow._console import err_console
from nimflow._exceptions import NimflowError

__all__ = ["CLICK_COMMANDS", "invoke", "main"]  # and `app`, built on first use

# The commands that run without typer (nimflow._cli_click says why); the app forwards to them.
CLICK_COMMANDS: dict[str, click.Command] = {"run": run, **read_group.commands}


def __getattr__(name: str) -> Any:
    # The typer app is built on first use (`from nimflow.cli import app` still works).
    if name in ("app", "_LAZY", "_lazy_command"):
        from nimflow import _cli_app

        return getattr(_cli_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> None:
    code = invoke(argv)
    # Everything is stored and closed by now: exit without the interpreter's teardown. Freeing
    # the objects of the ~750 modules a run imports took 0.4-0.6 s after a cached rerun (a quarter
    # of it), and a cancelled run abandons the sync task calls still in their threads (they cannot
    # be stopped), which a normal exit would wait for. The atexit handlers still run. Under a
    # profiler or tracer (`python -m cProfile -m nimflow`), which reports after main returns, the
    # exit is the normal one.
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError):  # a closed pipe (`nimflow runs | head`)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def invoke(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code; every error is printed in one style."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in CLICK_COMMANDS:
            command = CLICK_COMMANDS[args[0]]
            code = command.main(args=args[1:], prog_name=f"nimflow {args[0]}", standalone_mode=False)
        else:
            from nimflow._cli_app import app

            code = app(args=args, prog_name="nimflow", standalone_mode=False)
    except Exception as exc:
        failed = _failure(exc)
        if failed is None:
            raise
        return failed
    return code if isinstance(code, int) else 0


def _failure(exc: Exception) -> int | None:
    """The exit code of an error a user can cause, printed; None for a bug (it propagates)."""
    usage, errors, aborts = _click_classes()
    if isinstance(exc, usage):
        if type(exc).__name__ == "NoArgsIsHelpError":  # `nimflow cache`: the help is the answer
            click.echo(exc.format_message())  # type: ignore[attr-defined]
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        _error(exc.format_message() + hint)  # type: ignore[attr-defined]
        return 2
    if isinstance(exc, errors):
        _error(exc.format_message())  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 1))
    if isinstance(exc, aborts):
        _error("aborted")
        return 1
    if isinstance(exc, NimflowError):
        _error(str(exc), exc)
        return 1
    return None


def _click_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """click's usage errors, other errors and aborts, with typer's copies (typer vendors click from
    0.20 on) when typer was imported: if it was not, none of its errors was raised."""
    usage: list[type] = [click.UsageError]
    errors: list[type] = [click.ClickException]
    aborts: list[type] = [click.Abort]
    if "typer" in sys.modules:
        import typer

        try:
            from typer._click import exceptions as typer_click
        except ImportError:
            pass
        else:
            usage.append(typer_click.UsageError)
            errors.append(typer_click.ClickException)
        aborts.append(typer.Abort)
    return tuple(usage), tuple(errors), tuple(aborts)


def _error(message: str, exc: BaseException | None = None) -> None:
    if exc is not None and os.environ.get("NIMFLOW_LOG", "").upper() == "DEBUG":
        err_console.print("".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False)
    err_console.print(f"[red bold]error:[/] {escape(message)}", highlight=False)
