"""Server specs, overrides, ActorEnvironment, secrets and the CLI pieces."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimflow import secrets
from nimflow._exceptions import ActorConfigError, SecretMissingError, UserInputError
from nimflow.actors.cli import actors_app, secret_app
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.overrides import ActorOverride, apply_override, parse_actor_flags, parse_server_override
from nimflow.actors.servers import (
    NIM,
    VLLM,
    FakeOpenAI,
    LocalProcess,
    NIMSecrets,
    OpenAIEndpoint,
    parse_quantity,
)

IMAGE = "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20Gi", 20 * 1024**3), ("512Mi", 512 * 1024**2), ("16g", 16 * 1024**3), ("1G", 10**9), (1024, 1024),
     ("1.5Gi", int(1.5 * 1024**3)), (None, None)],
)  # fmt: skip
def test_quantities(text: str | int | None, expected: int | None) -> None:
    assert parse_quantity(text) == expected


def test_bad_quantity() -> None:
    with pytest.raises(ActorConfigError, match="not a size"):
        NIM(image=IMAGE, mem="lots")


def test_identities_are_known_without_starting_anything() -> None:
    assert NIM(image=IMAGE, model="m").identity() == f"nim:{IMAGE}:m:"
    vllm = VLLM(model="org/m", args=["--dtype=half", "--max-model-len=2000"])
    assert vllm.identity() == f"vllm:{vllm.image}:org/m:--dtype=half --max-model-len=2000:"
    assert OpenAIEndpoint(base_url="http://127.0.0.1:8000/v1/").identity() == "endpoint:"
    assert OpenAIEndpoint(base_url="http://127.0.0.1:9/v1", model="m").identity() == "endpoint:m"
    assert FakeOpenAI(model="m").identity() == "fake:m:"
    assert NIM(image=IMAGE).default_model_name() == "meta/llama3-8b-instruct"


def test_config_hash_follows_the_server_not_the_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    base = NIM(image=IMAGE)
    monkeypatch.setenv("NGC_API_KEY", "one")
    first = base.config_hash()
    monkeypatch.setenv("NGC_API_KEY", "two")
    assert base.config_hash() == first  # values are never part of it
    assert NIM(image=IMAGE, secrets=NIMSecrets(ngc_api_key="OTHER")).config_hash() != first  # names are
    assert NIM(image=IMAGE, env={"A": "1"}).config_hash() != first
    assert NIM(image=IMAGE, startup_timeout=5).config_hash() == first


def test_parse_server_override() -> None:
    assert isinstance(parse_server_override("fake"), FakeOpenAI)
    endpoint = parse_server_override("endpoint:http://127.0.0.1:8000/v1")
    assert isinstance(endpoint, OpenAIEndpoint) and endpoint.base_url == "http://127.0.0.1:8000/v1"
    process = parse_server_override("process:vllm serve org/m --port {port}")
    assert isinstance(process, LocalProcess) and process.argv(9) == ["vllm", "serve", "org/m", "--port", "9"]
    for bad in ("docker:x", "endpoint:", "endpoint:ftp://x", "", "process:"):
        with pytest.raises(UserInputError, match="fake"):
            parse_server_override(bad)
    assert parse_actor_flags(server=["nim-actor=fake"]) == {"nim-actor": ActorOverride(server="fake")}
    with pytest.raises(UserInputError, match=r"ACTOR=VALUE"):
        parse_actor_flags(server=["nim-actor"])


def test_apply_override_keeps_model_adapters_and_port() -> None:
    nim = NIM(
        image=IMAGE,
        hf_repo_ids=["Samhita/OrpoLlama-3-8B-Instruct"],
        env={"NIM_PEFT_SOURCE": "/loras"},
        port=8123,
    )
    fake = apply_override(parse_server_override("fake"), nim)
    assert fake == FakeOpenAI(model="meta/llama3-8b-instruct", adapter_names=("OrpoLlama-3-8B-Instruct",))
    process = apply_override(parse_server_override("process:llama-server -m x"), nim)
    assert isinstance(process, LocalProcess) and process.port == 8123
    process = apply_override(parse_server_override("process:llama-server --port {port}"), nim)
    assert isinstance(process, LocalProcess) and process.port == 0


def test_actor_environment_validates_and_makes_actor_tasks() -> None:
    actor = ActorEnvironment("nim-actor", NIM(image=IMAGE), replica_count=2, ttl_seconds=30)

    @actor.task(cache=True, cache_version="1")
    async def generate(text: str) -> str:
        return text

    assert generate.actor is actor
    assert generate.cache is True
    for kwargs in ({"name": "bad name"}, {"replica_count": 0}, {"ttl_seconds": -1}, {"max_concurrency": 0}):
        with pytest.raises(UserInputError):
            ActorEnvironment(**{"name": "a", "server": NIM(image=IMAGE), **kwargs})  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match=r"nf\.NIM"):
        ActorEnvironment("a", "nvcr.io/x")  # type: ignore[arg-type]


def test_secret_store_is_owner_only_and_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets.set_secret("HF_TOKEN", "stored-value")
    path = secrets.secret_store_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secrets.get_secret("HF_TOKEN") == "stored-value"
    monkeypatch.setenv("HF_TOKEN", "env-value")
    assert secrets.get_secret("HF_TOKEN") == "env-value"
    assert secrets.list_secrets() == ["HF_TOKEN"]
    assert secrets.delete_secret("HF_TOKEN") and not secrets.delete_secret("HF_TOKEN")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_secret_says_how_to_set_it() -> None:
    with pytest.raises(SecretMissingError) as info:
        secrets.get_secret("NGC_API_KEY", needed_by="actor 'nim-actor'")
    message = str(info.value)
    assert "actor 'nim-actor' needs the secret NGC_API_KEY" in message
    assert "nimflow secret create NGC_API_KEY" in message and "export NGC_API_KEY" in message
    with pytest.raises(UserInputError, match="not a valid secret name"):
        secrets.get_secret("bad-name")


def test_secret_cli_never_prints_values(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(secret_app, ["create", "NGC_API_KEY"], input="nvapi-top-secret\n")
    assert result.exit_code == 0, result.output
    assert "nvapi-top-secret" not in result.output
    listing = runner.invoke(secret_app, ["ls"])
    assert listing.exit_code == 0 and "NGC_API_KEY" in listing.output and "nvapi" not in listing.output
    assert secrets.get_secret("NGC_API_KEY") == "nvapi-top-secret"
    assert runner.invoke(secret_app, ["delete", "NGC_API_KEY"]).exit_code == 0
    assert runner.invoke(secret_app, ["delete", "NGC_API_KEY"]).exit_code == 1


def test_actors_cli_with_nothing_running() -> None:
    runner = CliRunner()
    result = runner.invoke(actors_app, ["ls"])
    assert result.exit_code == 0 and "no actor replicas" in result.output
    assert runner.invoke(actors_app, ["stop"]).exit_code == 2
    result = runner.invoke(actors_app, ["stop", "nim-actor"])
    assert result.exit_code == 0 and "no replicas" in result.output
