"""Every command and option explains itself, and `nimflow --help` lists commands in use order."""

from __future__ import annotations

from typing import Any

import click
import typer

from nimflow._cli_read import read_group
from nimflow.cli import app


def _commands(command: Any, path: str) -> list[tuple[str, Any]]:
    found = [(path, command)]
    if hasattr(command, "list_commands"):  # a group; list_commands also names the lazily loaded ones
        # The read commands are plain click ones (typer's forwarders to them take no options).
        ctx = click.Context(command) if isinstance(command, click.Group) else typer.Context(command)
        for name in command.list_commands(ctx):
            found += _commands(command.get_command(ctx, name), f"{path} {name}")
    return found


def test_every_command_and_option_has_a_one_line_help() -> None:
    missing = []
    every = _commands(typer.main.get_command(app), "nimflow") + _commands(read_group, "nimflow")[1:]
    assert {"nimflow show", "nimflow cache clear"} <= {path for path, command in every if command.params}
    for path, command in every:
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.name}")
    assert missing == []


def test_nimflow_help_lists_commands_in_the_order_they_are_used(capsys: Any) -> None:
    from nimflow.cli import invoke

    assert invoke(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == [
        "run", "batch", "serve", "runs", "show", "outputs", "kill", "cache", "artifacts", "launchplans",
        "actors", "secret", "batch-server", "fake-server",
    ]  # fmt: skip
    ours = out.split("Commands:")[1].split("fake-server")[0].splitlines()
    assert not [line for line in ours if line.rstrip().endswith("...")]  # the short helps fit


def test_the_listed_summary_of_a_lazy_command_is_its_own() -> None:
    from nimflow import cli

    for name, (_module, _attribute, summary) in cli._LAZY.items():
        assert cli._lazy_command(name).get_short_help_str(1000) == summary, name


def test_nimflow_help_loads_none_of_the_lazy_commands() -> None:
    import subprocess
    import sys

    script = "import sys\nfrom nimflow.cli import invoke\ninvoke(['--help'])\n" + (
        "print(sorted({m for m, *_ in __import__('nimflow.cli').cli._LAZY.values()} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
