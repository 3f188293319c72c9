"""Command-line options of the fake server, shared by ``python -m nimflow.testing`` (argparse,
so that the server runs where only the stdlib, uvicorn and anyio are installed) and by
``nimflow fake-server`` (typer, in ``cli.py``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from ._app import DEFAULT_MAX_MODEL_LEN, DEFAULT_MODEL

DESCRIPTION = (
    "Run nimflow's fake OpenAI-compatible server: deterministic answers made from the prompt, "
    "JSON-schema structured output, latency, a concurrency cap, an API key check and scripted faults. "
    "Every response carries the header x-nimflow-fake: 1."
)
FAULTS_HELP = (
    "Faults for inference requests. Rates: '429:0.1,500:0.05' (or 429:10%). Exact sequence, then "
    "no faults: 'seq:ok,429*2,drop'. Both: 'seq:429;500:0.05'. Options: 'retry_after=2', "
    "'hang_seconds=30'. Kinds: ok 429 500 503 hang drop malformed truncate. Change at runtime "
    'with POST /_fake/faults {"spec": ...}.'
)
HELP = {
    "host": "Address to listen on (keep 127.0.0.1 unless a container needs more).",
    "port": "Port to listen on; 0 picks a free one (printed on the ready line).",
    "model": "Base model name served and listed by /v1/models.",
    "adapter": "A LoRA adapter name served as a model (repeat for more).",
    "latency_ms": "Latency of every inference request, in milliseconds (never blocks others).",
    "latency_per_token_ms": "Extra latency per generated token, in milliseconds.",
    "max_concurrency": "Requests answered at once; the rest wait in a queue (like a GPU batch).",
    "api_key": "Require 'Authorization: Bearer KEY' (else 401). Also read from NIMFLOW_FAKE_API_KEY.",
    "faults": FAULTS_HELP,
    "max_model_len": "Context length in tokens (whitespace words); longer prompts get vLLM's 400.",
    "seed": "Seed of the random draws behind fault rates.",
    "log_limit": "Requests kept in the request log (GET /_fake/log); 0 keeps none.",
    "log_level": "uvicorn's log level (critical, error, warning, info, debug).",
}


def build_parser() -> argparse.ArgumentParser:
    _h = {name: text.replace("%", "%%") for name, text in HELP.items()}  # argparse formats help with %
    parser = argparse.ArgumentParser(prog="python -m nimflow.testing", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1", help=_h["host"])
    parser.add_argument("--port", type=int, default=8000, help=_h["port"])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=_h["model"])
    parser.add_argument("--adapter", action="append", default=[], dest="adapters", help=_h["adapter"])
    parser.add_argument("--latency-ms", type=float, default=0.0, help=_h["latency_ms"])
    parser.add_argument("--latency-per-token-ms", type=float, default=0.0, help=_h["latency_per_token_ms"])
    parser.add_argument("--max-concurrency", type=int, default=None, help=_h["max_concurrency"])
    parser.add_argument("--api-key", default=os.environ.get("NIMFLOW_FAKE_API_KEY"), help=_h["api_key"])
    parser.add_argument("--faults", default=None, help=_h["faults"])
    parser.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN, help=_h["max_model_len"])
    parser.add_argument("--seed", type=int, default=0, help=_h["seed"])
    parser.add_argument("--log-limit", type=int, default=10_000, help=_h["log_limit"])
    parser.add_argument("--log-level", default="warning", help=_h["log_level"])
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ._faults import FaultPlan
    from ._server import serve

    try:
        plan = FaultPlan.parse(args.faults)
    except ValueError as error:
        parser.error(f"--faults: {error}")
    try:
        serve(**{**vars(args), "faults": plan})
    except (ValueError, OSError) as error:  # a bad knob, or the port is taken
        parser.exit(2, f"{parser.prog}: error: {error}\n")
