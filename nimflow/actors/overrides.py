"""`--server ACTOR=SPEC`: serve a named actor another way without editing the pipeline."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nimflow._exceptions import UserInputError
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.servers import NIM, FakeOpenAI, LocalProcess, OpenAIEndpoint, ServerSpec

__all__ = ["apply_override", "check_overrides", "parse_server_override"]

_USAGE = (
    "use `fake` (the fake OpenAI server), `endpoint:URL` (a server that already runs, e.g. "
    "endpoint:http://127.0.0.1:8000/v1) or `process:CMD` (a command that serves on {port})"
)


def parse_server_override(spec: str) -> ServerSpec:
    """ "fake" | "endpoint:URL" | "process:CMD" -> a server spec (model filled in by apply_override)."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if text == "fake":
        return FakeOpenAI(model="")
    if sep and kind == "endpoint" and rest.strip():
        if not rest.strip().startswith(("http://", "https://")):
            raise UserInputError(f"--server {spec!r}: the endpoint must be an http(s) URL; {_USAGE}.")
        return OpenAIEndpoint(base_url=rest.strip())
    if sep and kind == "process" and rest.strip():
        return LocalProcess(command=rest.strip())
    raise UserInputError(f"--server value {spec!r} is not understood: {_USAGE}.")


def parse_assignment(item: str) -> tuple[str, str]:
    """ "ACTOR=SPEC" from the command line."""
    actor, sep, spec = item.partition("=")
    if not sep or not actor.strip() or not spec.strip():
        raise UserInputError(f"--server {item!r}: write it as ACTOR=SPEC, e.g. nim-actor=fake; {_USAGE}.")
    parse_server_override(spec)
    return actor.strip(), spec.strip()


def apply_override(override: ServerSpec, original: ServerSpec) -> ServerSpec:
    """The override, with the model, adapters and port the original server would have had."""
    model = original.model_name()
    if model is None and isinstance(original, NIM):
        model = original.default_model_name()
    if isinstance(override, FakeOpenAI):
        return FakeOpenAI(model=override.model or model or "fake-model", adapter_names=original.adapters())
    if isinstance(override, OpenAIEndpoint):
        return OpenAIEndpoint(
            base_url=override.base_url, api_key=override.api_key, model=override.model or model
        )
    if isinstance(override, LocalProcess):
        command = override.command
        has_placeholder = any("{port}" in a for a in override.argv())
        port = override.port or (0 if has_placeholder else int(getattr(original, "port", 0) or 0))
        return LocalProcess(command=command, port=port, model=override.model or model, env=override.env)
    return override


def check_overrides(overrides: Mapping[str, object], actors: Iterable[ActorEnvironment]) -> None:
    """An override must name an actor the workflow uses."""
    used = sorted({a.name for a in actors})
    unknown = sorted(set(overrides) - set(used))
    if unknown:
        listing = ", ".join(used) if used else "none"
        raise UserInputError(
            f"--server names {', '.join(repr(u) for u in unknown)}, which this workflow does not use; "
            f"its actors: {listing}."
        )
