"""Helpers for the Batch file tests: input files, the CLI's argv, the fake server's answers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from nimflow.testing import FakeServer

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def chat_line(custom_id: str, text: str | None = None, **body: Any) -> dict[str, Any]:
    content = text if text is not None else f"Question {custom_id}. Answer it briefly."
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "meta/llama3-8b-instruct",
            "messages": [{"role": "user", "content": content}],
            **body,
        },
    }


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "120"}


def nimflow_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "nimflow", *args]


def answered(server: FakeServer) -> list[str]:
    """Prompts the server answered for real (status 200, no fault), in order."""
    return [
        r.prompt
        for r in server.requests
        if r.path == "/v1/chat/completions" and r.status == 200 and r.fault is None
    ]
