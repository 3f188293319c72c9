"""The read commands and a workflow that uses `chat_many` load without the model-call stacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("openai", "aiohttp", "docker", "alembic", "nimflow.actors.pool", "nimflow.batch", "nimflow.testing")


def _loaded_after(code: str, home: Path, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    script = f"import sys\n{code}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"NIMFLOW_HOME": str(home)},
    ).stdout
    return list(eval(out.strip().splitlines()[-1]))


def test_runs_and_show_import_none_of_the_model_call_stacks(tmp_path: Path) -> None:
    code = "from nimflow.cli import invoke\ninvoke(['runs'])\ninvoke(['show'])"
    assert _loaded_after(code, tmp_path) == []


def test_read_commands_import_neither_typer_nor_pydantic(tmp_path: Path) -> None:
    # typer converts each parameter through a pydantic TypeAdapter: the read commands are click's.
    # (The first command creates the database through the Store, with its SQLModel tables.)
    subprocess.run([sys.executable, "-m", "nimflow", "runs"], check=True, env={"NIMFLOW_HOME": str(tmp_path)})
    code = "from nimflow.cli import invoke\ninvoke(['runs'])\ninvoke(['show'])\ninvoke(['cache', 'ls'])"
    assert _loaded_after(code, tmp_path, ("typer", "pydantic", "sqlalchemy")) == []


def test_the_app_still_runs_the_read_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nimflow.cli import app

    env = {"NIMFLOW_HOME": str(tmp_path)}
    listed = CliRunner().invoke(app, ["runs", "--limit", "3"], env=env)
    assert listed.exit_code == 0 and "RUN" in listed.output.upper(), listed.output
    helped = CliRunner().invoke(app, ["cache", "clear", "--help"], env=env)
    assert helped.exit_code == 0 and "Usage: nimflow cache clear [OPTIONS] [task]" in helped.output


def test_importing_chat_many_and_extract_does_not_import_openai(tmp_path: Path) -> None:
    assert _loaded_after("from nimflow.llm import chat_many, extract, current_actor", tmp_path) == []


def test_a_lazily_registered_command_still_runs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nimflow.cli import app

    result = CliRunner().invoke(app, ["secret", "ls"], env={"NIMFLOW_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
