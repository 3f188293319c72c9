"""A workflow's signature as command-line options, the way `pyflyte run` builds them.

The options only turn text into values (numbers, flags, JSON for lists, dicts and models);
checking them against the type hints is the run's job, done once there.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nimflow import _serialize
from nimflow._artifacts import REF_PREFIX
from nimflow._workflow import WorkflowSpec

__all__ = ["ArtifactOr", "inputs_command"]

if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]
else:  # generic only in newer click releases
    _ParamType = click.ParamType


class ArtifactOr(_ParamType):
    """An input option's type that also takes `@artifact:NAME[:VERSION]` (read when the run starts)."""

    def __init__(self, inner: click.ParamType[Any]) -> None:
        self.inner = inner
        self.name = inner.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.startswith(REF_PREFIX):
            return value
        return self.inner.convert(value, param, ctx)


def inputs_command(wf: WorkflowSpec[..., Any], file: Path) -> click.Command:
    """A click command whose options are the workflow's inputs; it returns the values given."""
    params: list[click.Parameter] = []
    for name, param in wf.signature.parameters.items():
        hint = wf.input_hints[name]
        flag = name.replace("_", "-")
        required = param.default is param.empty
        help_text = _serialize.type_name(hint) + ("" if required else f" (default: {param.default!r})")
        if hint is bool:
            params.append(click.Option([f"--{flag}/--no-{flag}"], default=None, help=help_text))
            continue
        names = [f"--{flag}"] + ([f"--{name}"] if flag != name else [])
        click_type: Any = {int: click.INT, float: click.FLOAT}.get(hint, click.STRING)
        params.append(click.Option(names, type=ArtifactOr(click_type), default=None, help=help_text))

    def callback(**values: Any) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for name, raw in values.items():
            if raw is None:  # not given: the run fills in the default or says it is needed
                continue
            if isinstance(raw, str) and raw.startswith("@artifact:"):
                pass  # an artifact version (@artifact:NAME[:VERSION]), read when the run starts
            elif isinstance(raw, str) and not _accepts_text(wf.input_hints[name], raw):
                with contextlib.suppress(json.JSONDecodeError):  # the run says what was expected
                    raw = json.loads(raw)
            inputs[name] = raw
        return inputs

    return click.Command(
        name=wf.name,
        params=params,
        callback=callback,
        help=(wf.fn.__doc__ or f"Run workflow {wf.name} of {file}."),
    )


def _accepts_text(hint: Any, text: str) -> bool:
    """Whether the input takes this text as it is (a str, str | None, a Literal); else it is JSON."""
    try:
        _serialize.validate(text, hint, "input")
    except Exception:
        return False
    return True
