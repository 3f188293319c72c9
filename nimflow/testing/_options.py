"""The fake server's options, defined once.

``FakeOptions`` is the single definition: each field's metadata carries its help text and how
it travels. Everything else is derived from it: the argv of a child process (``argv()``, the
API key going through the environment so ``ps`` does not show it), the argparse options of
``python -m nimflow.testing`` (stdlib only, so the server runs in a minimal image), the typer
options of ``nimflow fake-server`` (``cli.py``), and the HTTP control ``GET/POST /_fake/config``
(fields marked ``live`` change at runtime).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._faults import FaultPlan

DEFAULT_MODEL = "meta/llama3-8b-instruct"
DEFAULT_MAX_MODEL_LEN = 8192
API_KEY_ENV = "NIMFLOW_FAKE_API_KEY"

DESCRIPTION = (
    "Run nimflow's fake OpenAI-compatible server: deterministic answers made from the prompt, "
    "JSON-schema structured output, latency, a concurrency cap, an API key check and scripted faults. "
    "Every response carries the header x-nimflow-fake: 1."
)
FAULTS_HELP = (
    "Faults for inference requests. Rates: '429:0.1,500:0.05' (or 429:10%). Exact sequence, then "
    "no faults: 'seq:ok,429*2,drop'. Both: 'seq:429;500:0.05'. Options: 'retry_after=2', "
    "'hang_seconds=30'. Kinds: ok 429 500 503 hang drop malformed html truncate. Change at runtime "
    'with POST /_fake/faults {"spec": ...}.'
)


def _opt(
    help: str,
    *,
    live: bool = False,
    env: str | None = None,
    secret: bool = False,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] = str,
) -> dict[str, Any]:
    """Field metadata: help text, whether it may change at runtime (``live``), the environment
    variable it is also read from, whether it is a secret (never in argv or /_fake/config),
    its flag when not ``--field-name``, how a string becomes its value and back."""
    return {
        "help": help,
        "live": live,
        "env": env,
        "secret": secret,
        "flag": flag,
        "parse": parse,
        "show": show,
    }


def _faults_text(plan: Any) -> str:
    return str(FaultPlan.coerce(plan).to_spec())


@dataclass(frozen=True)
class FakeOptions:
    """Every knob of one fake server."""

    host: str = field(
        default="127.0.0.1",
        metadata=_opt("Address to listen on (keep 127.0.0.1 unless a container needs more)."),
    )
    port: int = field(
        default=8000, metadata=_opt("Port to listen on; 0 picks a free one (printed on the ready line).")
    )
    model: str = field(
        default=DEFAULT_MODEL, metadata=_opt("Base model name served and listed by /v1/models.")
    )
    adapters: tuple[str, ...] = field(
        default=(),
        metadata=_opt("A LoRA adapter name served as a model (repeat for more).", flag="--adapter"),
    )
    latency_ms: float = field(
        default=0.0,
        metadata=_opt(
            "Latency of every inference request, in milliseconds (never blocks others).", live=True
        ),
    )
    latency_per_token_ms: float = field(
        default=0.0, metadata=_opt("Extra latency per generated token, in milliseconds.", live=True)
    )
    max_concurrency: int | None = field(
        default=None,
        metadata=_opt(
            "Requests answered at once; the rest wait in a queue (like a GPU batch), reported as "
            "vllm:num_requests_waiting on /v1/metrics."
        ),
    )
    api_key: str | None = field(
        default=None,
        metadata=_opt(
            f"Require 'Authorization: Bearer KEY' (else 401). Also read from {API_KEY_ENV}.",
            env=API_KEY_ENV,
            secret=True,
        ),
    )
    faults: FaultPlan = field(
        default_factory=FaultPlan,
        metadata=_opt(FAULTS_HELP, parse=FaultPlan.parse, show=_faults_text),
    )
    max_model_len: int = field(
        default=DEFAULT_MAX_MODEL_LEN,
        metadata=_opt("Context length in tokens (whitespace words); longer prompts get vLLM's 400."),
    )
    seed: int = field(default=0, metadata=_opt("Seed of the random draws behind fault rates."))
    log_limit: int = field(
        default=10_000, metadata=_opt("Requests kept in the request log (GET /_fake/log); 0 keeps none.")
    )
    log_level: str = field(
        default="warning", metadata=_opt("uvicorn's log level (critical, error, warning, info, debug).")
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapters", tuple(self.adapters))
        object.__setattr__(self, "faults", FaultPlan.coerce(self.faults))
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(
                f"max_concurrency must be at least 1 (or None for no cap), got {self.max_concurrency}"
            )
        if self.latency_ms < 0 or self.latency_per_token_ms < 0:
            raise ValueError("latencies must not be negative")
        if self.max_model_len < 1:
            raise ValueError(f"max_model_len must be at least 1, got {self.max_model_len}")

    # -- derived forms -------------------------------------------------------------------------
    def argv(self) -> list[str]:
        """Command-line flags for ``python -m nimflow.testing`` (secrets left out: see ``env``)."""
        args: list[str] = []
        defaults = FakeOptions()
        for f in fields():
            value = getattr(self, f.name)
            if f.metadata["secret"] or (value == getattr(defaults, f.name) and f.name != "port"):
                continue
            if value is None:
                continue
            values = value if isinstance(value, tuple) else (value,)
            for item in values:
                args += [flag_of(f), f.metadata["show"](item)]
        return args

    def env(self) -> dict[str, str]:
        """Environment variables carrying the secret options of a child process."""
        return {
            f.metadata["env"]: str(getattr(self, f.name))
            for f in fields()
            if f.metadata["secret"] and getattr(self, f.name) is not None
        }

    def public(self) -> dict[str, Any]:
        """The options as JSON (``GET /_fake/config``): secrets masked, faults as their spec."""
        out: dict[str, Any] = {}
        for f in fields():
            value = getattr(self, f.name)
            if f.metadata["secret"]:
                value = None if value is None else "***"
            elif f.name == "faults":
                value = value.to_json()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def changed(self, updates: Mapping[str, Any]) -> FakeOptions:
        """A copy with live options changed (``POST /_fake/config``); others are refused."""
        live = {f.name for f in fields() if f.metadata["live"]} | {"faults"}
        refused = sorted(set(updates) - live)
        if refused:
            raise ValueError(f"options {refused} cannot change at runtime; live ones: {sorted(live)}")
        return dataclasses.replace(self, **updates)


def fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(FakeOptions)


def flag_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata["flag"] or "--" + f.name.replace("_", "-"))


def value_type(f: dataclasses.Field[Any]) -> type:
    """The scalar type a command line gives for a field (str for parsed ones such as faults)."""
    default = FakeOptions()
    value = getattr(default, f.name)
    if f.metadata["parse"] is not None or f.name in ("api_key", "adapters"):
        return str
    if f.name == "max_concurrency":
        return int
    return type(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nimflow.testing", description=DESCRIPTION)
    defaults = FakeOptions()
    for f in fields():
        help_text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        kind = value_type(f)
        if isinstance(getattr(defaults, f.name), tuple):
            parser.add_argument(flag_of(f), action="append", default=[], dest=f.name, help=help_text)
            continue
        default = getattr(defaults, f.name)
        if f.metadata["env"]:
            default = os.environ.get(f.metadata["env"], default)
        elif f.metadata["parse"] is not None:
            default = None
        parser.add_argument(flag_of(f), type=kind, default=default, dest=f.name, help=help_text)
    return parser


def from_strings(values: Mapping[str, Any]) -> FakeOptions:
    """Options from command-line values (parsed fields turned from text; None means default)."""
    kwargs: dict[str, Any] = {}
    for f in fields():
        value = values.get(f.name)
        if value is None or value == []:
            continue
        parse = f.metadata["parse"]
        kwargs[f.name] = parse(value) if parse is not None and isinstance(value, str) else value
    return FakeOptions(**kwargs)
