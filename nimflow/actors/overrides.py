"""Per-actor options from the command line (`--server`, `--model`, `--api-key`, `--request-timeout`,
`--replicas`, each ACTOR=VALUE): serve a named actor another way without editing the pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from nimflow._exceptions import UserInputError
from nimflow.actors.environment import replica_bounds
from nimflow.actors.servers import NIM, FakeOpenAI, LocalProcess, OpenAIEndpoint, ServerSpec
from nimflow.secrets import Secret, check_secret_name

__all__ = [
    "ActorOverride",
    "apply_override",
    "check_overrides",
    "parse_actor_flags",
    "parse_server_override",
    "replica_bounds_of",
]

_USAGE = (
    "use `fake` (the fake OpenAI server), `endpoint:URL` (a server that already runs, e.g. "
    "endpoint:http://127.0.0.1:8000/v1) or `process:CMD` (a command that serves on {port})"
)


@dataclass(frozen=True)
class ActorOverride:
    """What the command line changes about one actor; None leaves the pipeline's own value."""

    server: str | None = None  # "fake" | "endpoint:URL" | "process:CMD"
    model: str | None = None
    api_key: str | None = None  # a secret NAME, never a value
    request_timeout: float | None = None
    replicas: str | None = None
    placement: str | None = None

    def merged(self, other: ActorOverride) -> ActorOverride:
        return ActorOverride(
            **{f.name: getattr(other, f.name) if getattr(other, f.name) is not None else getattr(self, f.name)
               for f in dataclasses.fields(self)}
        )  # fmt: skip

    def describe(self, actor: str) -> str:
        """How the command line changed the actor, for the run summary (secret names only)."""
        values = (
            ("server", self.server), ("model", self.model), ("api-key", self.api_key),
            ("request-timeout", None if self.request_timeout is None else f"{self.request_timeout:g}"),
            ("replicas", self.replicas),
        )  # fmt: skip
        return " ".join(f"--{flag} {actor}={value}" for flag, value in values if value is not None)


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


def _split(flag: str, item: str, example: str) -> tuple[str, str]:
    actor, sep, value = item.partition("=")
    if not sep or not actor.strip() or not value.strip():
        raise UserInputError(f"--{flag} {item!r}: write it as ACTOR=VALUE, e.g. --{flag} {example}.")
    return actor.strip(), value.strip()


def _timeout(item: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserInputError(
            f"--request-timeout {item!r}: the timeout is a number of seconds above 0, e.g. nim-actor=600."
        )
    return seconds


def parse_actor_flags(
    *,
    server: Sequence[str] = (),
    model: Sequence[str] = (),
    api_key: Sequence[str] = (),
    request_timeout: Sequence[str] = (),
    replicas: Sequence[str] = (),
) -> dict[str, ActorOverride]:
    """Every per-actor flag, each item "ACTOR=VALUE", into one ActorOverride per actor."""
    found: dict[str, ActorOverride] = {}

    def put(actor: str, **values: object) -> None:
        found[actor] = found.get(actor, ActorOverride()).merged(ActorOverride(**values))  # type: ignore[arg-type]

    for item in server:
        actor, value = _split("server", item, "nim-actor=fake")
        parse_server_override(value)
        put(actor, server=value)
    for item in model:
        actor, value = _split("model", item, "nim-actor=meta/llama3-8b-instruct")
        put(actor, model=value)
    for item in api_key:
        actor, value = _split("api-key", item, "my-actor=OPENAI_API_KEY")
        check_secret_name(value, flag=f"--api-key {actor}=...")
        put(actor, api_key=value)
    for item in request_timeout:
        actor, value = _split("request-timeout", item, "nim-actor=600")
        put(actor, request_timeout=_timeout(item, value))
    for item in replicas:
        actor, value = _split("replicas", item, "nim-actor=1:4")
        replica_bounds_of(value, f"--replicas {item!r}")
        put(actor, replicas=value)
    return found


def replica_bounds_of(text: str, where: str) -> tuple[int, int]:
    """ "N" or "MIN:MAX" (a --replicas value) -> (min, max)."""
    low, sep, high = text.partition(":")
    try:
        value: int | tuple[int, int] = (int(low), int(high)) if sep else int(low)
    except ValueError:
        raise UserInputError(
            f"{where}: give a number of replicas or MIN:MAX, e.g. --replicas nim-actor=2 or nim-actor=1:4."
        ) from None
    return replica_bounds(value, where)


def as_overrides(servers: Mapping[str, str | ActorOverride] | None) -> dict[str, ActorOverride]:
    """A plain string is a --server value."""
    return {
        name: value if isinstance(value, ActorOverride) else ActorOverride(server=value)
        for name, value in (servers or {}).items()
    }


def _with_model(spec: ServerSpec, model: str) -> ServerSpec:
    # Every spec that can be told its model has a `model` field (VLLM: the model it loads).
    return dataclasses.replace(spec, model=model) if hasattr(spec, "model") else spec  # type: ignore[type-var]


def resolve_server(original: ServerSpec, override: ActorOverride | None, actor: str) -> ServerSpec:
    """The server an actor runs on once the command line's options are applied."""
    if override is None:
        return original
    spec = original
    if override.server is not None:
        spec = apply_override(parse_server_override(override.server), original)
    if override.model is not None:
        spec = _with_model(spec, override.model)
        if isinstance(spec, FakeOpenAI):
            spec = dataclasses.replace(spec, adapter_names=())  # the named model, without adapters
    if override.api_key is not None:
        if not isinstance(spec, OpenAIEndpoint):
            raise UserInputError(
                f"--api-key {actor}=...: actor {actor!r} is served by {spec.describe()}, which takes no "
                "API key; --api-key is for endpoints (--server ACTOR=endpoint:URL)."
            )
        spec = dataclasses.replace(spec, api_key=Secret(override.api_key))
    return spec


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
        port = override.port or (0 if has_placeholder else original.base_port())
        return LocalProcess(command=command, port=port, model=override.model or model, env=override.env)
    return override


def check_overrides(overrides: Mapping[str, object], actors: Iterable[object]) -> None:
    """An override must name an actor the workflow uses."""
    used = sorted({str(getattr(a, "name", a)) for a in actors})
    unknown = sorted(set(overrides) - set(used))
    if unknown:
        listing = ", ".join(used) if used else "none"
        raise UserInputError(
            f"--server names {', '.join(repr(u) for u in unknown)}, which this workflow does not use; "
            f"its actors: {listing}."
        )
