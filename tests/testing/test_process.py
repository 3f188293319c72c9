"""The fake server as its own process: spawn(), python -m nimflow.testing, the typer command."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import openai
import pytest
import typer
from typer.testing import CliRunner

import nimflow.testing
from nimflow.testing import FakeServerProcess, FaultKind, spawn
from nimflow.testing._options import build_parser
from nimflow.testing.cli import fake_server

PACKAGE_ROOT = Path(nimflow.testing.__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
    }


def test_spawned_process_serves_and_is_scripted_over_http() -> None:
    with spawn(adapters=["lora/a"], api_key="sk-proc", faults="seq:429") as server:
        assert server.pid != os.getpid()
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        with openai.OpenAI(base_url=server.base_url, api_key="sk-proc", max_retries=0) as client:
            assert [m.id for m in client.models.list()] == ["meta/llama3-8b-instruct", "lora/a"]
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="lora/a", messages=[{"role": "user", "content": "Hi."}])
            server.set_faults("seq:500")
            assert server.faults.sequence == (FaultKind.SERVER_ERROR,)
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="lora/a", messages=[{"role": "user", "content": "Hi."}])
            reply = client.chat.completions.create(
                model="lora/a", messages=[{"role": "user", "content": "Hi."}]
            )
            assert reply.choices[0].message.content == "Hi."
        records = [r for r in server.requests if r.path == "/v1/chat/completions"]
        assert [(r.fault, r.status) for r in records] == [("429", 429), ("500", 500), (None, 200)]
        server.clear_log()
        assert server.requests == []
    assert server.returncode is not None


def test_process_start_failure_reports_stderr() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = FakeServerProcess(port=taken.getsockname()[1])  # the child cannot bind it
        with pytest.raises(RuntimeError, match=r"(?s)exited with code 2.*Address already in use"):
            process.start(timeout=30)


def test_bad_options_are_refused_before_a_process_starts() -> None:
    with pytest.raises(ValueError, match="max_model_len must be at least 1"):
        FakeServerProcess(max_model_len=0)


def test_python_dash_m_prints_a_ready_line_and_stops_on_sigterm() -> None:
    args = [sys.executable, "-m", "nimflow.testing", "--port", "0", "--model", "m/x", "--adapter", "a1"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("nimflow fake server ready on http://127.0.0.1:")
        assert "(model: m/x, adapters: a1)" in line
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr


def test_python_dash_m_help_and_bad_faults() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "nimflow.testing", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert run.returncode == 0
    assert "--faults" in run.stdout and "--max-concurrency" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "nimflow.testing", "--faults", "404:1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert bad.returncode == 2
    assert "unknown fault kind '404'" in bad.stderr


def test_server_modules_import_only_the_allowed_packages(tmp_path: Path) -> None:
    # As in the Docker image: nimflow/testing beside an empty nimflow/__init__.py.
    shutil.copytree(PACKAGE_ROOT / "nimflow" / "testing", tmp_path / "nimflow" / "testing")
    (tmp_path / "nimflow" / "__init__.py").write_text("")
    code = textwrap.dedent(
        """
        import sys
        import nimflow.testing.__main__, nimflow.testing._server, nimflow.testing._options
        forbidden = {"pydantic", "openai", "typer", "httpx", "httpx2", "sqlmodel", "sqlalchemy", "rich",
                     "aiohttp", "tenacity", "docker"}
        print(sorted(m for m in sys.modules if m.split(".")[0] in forbidden
                     or (m.startswith("nimflow.") and not m.startswith("nimflow.testing"))))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_typer_command_has_the_same_options_as_python_dash_m() -> None:
    app = typer.Typer()
    app.command("fake-server")(fake_server)
    app.command("other")(lambda: None)  # a second command keeps "fake-server" a subcommand
    result = CliRunner().invoke(app, ["fake-server", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    typer_flags = set(__import__("re").findall(r"--[a-z][a-z-]+", result.output)) - {"--help"}
    argparse_flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert typer_flags == argparse_flags - {"-h", "--help"}


def test_pytest_fixture_for_users(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import openai

            def test_pipeline(fake_openai):
                fake_openai.set_faults("seq:503")
                with openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=1) as client:
                    reply = client.chat.completions.create(
                        model="meta/llama3-8b-instruct", messages=[{"role": "user", "content": "Hi."}]
                    )
                assert reply.choices[0].message.content == "Hi."
                assert [r.status for r in fake_openai.requests] == [503, 200]

            def test_log_and_faults_reset(fake_openai):
                assert fake_openai.requests == []
                assert fake_openai.faults.sequence == ()

            def test_factory(fake_openai_factory):
                server = fake_openai_factory(adapters=["a"], latency_ms=1)
                assert server.running and server.config.adapters == ("a",)
            """
        )
    )
    installed = any(ep.value == "nimflow.testing.plugin" for ep in entry_points(group="pytest11"))
    plugin_args = [] if installed else ["-p", "nimflow.testing.plugin"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            *plugin_args,
            "test_user.py",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=100,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
