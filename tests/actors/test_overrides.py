"""Per-actor options from the command line: one parser, --model with every server kind, API keys
by secret name, request timeouts."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

import nimflow as nf
from nimflow._exceptions import UserInputError
from nimflow._store import Store
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.overrides import ActorOverride, parse_actor_flags, resolve_server
from nimflow.actors.pool import ActorSession
from nimflow.actors.servers import NIM, VLLM, FakeOpenAI, LocalProcess, OpenAIEndpoint
from nimflow.testing import FakeServer

IMAGE = "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"


def test_every_flag_goes_through_one_parser() -> None:
    flags = parse_actor_flags(
        server=["a=endpoint:http://127.0.0.1:8080/v1", "b=fake"],
        model=["a=tiny-llama", "c=org/m"],
        api_key=["a=LLAMA_KEY"],
        request_timeout=["a=30", "b=2.5"],
    )
    assert flags == {
        "a": ActorOverride(
            server="endpoint:http://127.0.0.1:8080/v1",
            model="tiny-llama",
            api_key="LLAMA_KEY",
            request_timeout=30.0,
        ),
        "b": ActorOverride(server="fake", request_timeout=2.5),
        "c": ActorOverride(model="org/m"),
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"model": ["just-a-name"]}, r"--model 'just-a-name': write it as ACTOR=VALUE"),
        ({"request_timeout": ["a=soon"]}, r"number of seconds above 0"),
        ({"request_timeout": ["a=0"]}, r"number of seconds above 0"),
        ({"server": ["a=docker:x"]}, r"not understood"),
        ({"api_key": ["a=sk-proj-abcdef123456"]}, r"looks like an API key itself"),
    ],
)
def test_bad_flags_get_one_clear_error(flags: dict[str, list[str]], message: str) -> None:
    with pytest.raises(UserInputError, match=message) as info:
        parse_actor_flags(**flags)
    assert "sk-proj" not in str(info.value)  # a pasted key is never echoed back


def test_model_works_with_every_server_kind_and_with_server() -> None:
    nim = NIM(image=IMAGE, hf_repo_ids=["org/OrpoLlama"], env={"NIM_PEFT_SOURCE": "/l"})
    override = ActorOverride(model="tiny-llama")
    assert resolve_server(nim, override, "a").model_name() == "tiny-llama"
    assert resolve_server(VLLM(model="org/m"), override, "a").model_name() == "tiny-llama"
    assert resolve_server(OpenAIEndpoint("http://127.0.0.1:9/v1"), override, "a").model_name() == "tiny-llama"
    assert resolve_server(LocalProcess("serve {port}"), override, "a").model_name() == "tiny-llama"
    # With --server the model replaces the pipeline's, and its adapters are not asked for.
    fake = resolve_server(nim, ActorOverride(server="fake", model="tiny-llama"), "a")
    assert fake == FakeOpenAI(model="tiny-llama")
    endpoint = resolve_server(
        nim, ActorOverride(server="endpoint:http://127.0.0.1:8080/v1", model="tiny-llama"), "a"
    )
    assert isinstance(endpoint, OpenAIEndpoint) and endpoint.model == "tiny-llama"
    with pytest.raises(UserInputError, match="--api-key is for endpoints"):
        resolve_server(nim, ActorOverride(api_key="KEY"), "a")


def test_endpoint_api_key_is_a_secret_name_and_a_pasted_key_is_refused() -> None:
    assert (
        OpenAIEndpoint("http://127.0.0.1:9/v1", api_key=nf.Secret("OPENAI_API_KEY")).api_key_name
        == "OPENAI_API_KEY"
    )
    assert OpenAIEndpoint("http://127.0.0.1:9/v1", api_key="OPENAI_API_KEY").api_key_name == "OPENAI_API_KEY"
    for value in ("sk-abc123def456", "ep-20240101-xyz", "a8Fk2LmQ9zX7wV3bN5cR1tY6"):
        with pytest.raises(UserInputError, match=r"looks like an API key itself") as info:
            OpenAIEndpoint("http://127.0.0.1:9/v1", api_key=value)
        assert value not in str(info.value) and 'nf.Secret("MY_API_KEY")' in str(info.value)
    with pytest.raises(UserInputError, match=r"nf.Secret\('my_key'\)"):
        OpenAIEndpoint("http://127.0.0.1:9/v1", api_key="my_key")


def test_request_timeout_reaches_the_actor_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserInputError, match="request_timeout"):
        ActorEnvironment("t", OpenAIEndpoint("http://127.0.0.1:9/v1"), request_timeout=0)
    monkeypatch.setenv("TINY_KEY", "tiny-secret-value")
    with FakeServer(model="tiny-llama", api_key="tiny-secret-value") as fake:
        env = ActorEnvironment(
            "t", OpenAIEndpoint("http://127.0.0.1:9/v1", model="other"), request_timeout=45
        )
        flags = parse_actor_flags(
            server=[f"t=endpoint:{fake.base_url}"], model=["t=tiny-llama"], api_key=["t=TINY_KEY"]
        )

        async def main() -> tuple[float, float, str, str]:
            store = Store.open()
            try:
                async with ActorSession(store, flags) as session:
                    ctx = await session.context_for(env)
                    reply = await ctx.client.chat.completions.create(
                        model=ctx.model, messages=[{"role": "user", "content": "Keys stay secret."}]
                    )
                    timeout = ctx.client.timeout
                    served = session.served_by()["t"]
                    return (
                        env.request_timeout,
                        float(timeout.read),
                        reply.choices[0].message.content or "",
                        served,
                    )
            finally:
                store.close()

        stored, read, answer, served = anyio.run(main)
    assert stored == 45.0 and read == 45.0
    assert answer == "Keys stay secret."
    assert "--model t=tiny-llama" in served and "--api-key t=TINY_KEY" in served
    assert "tiny-secret-value" not in served


def test_nimflow_run_takes_model_api_key_and_request_timeout(tmp_path: Path) -> None:
    from nimflow.cli import app

    pipeline = tmp_path / "one.py"
    pipeline.write_text(
        "import nimflow as nf\n"
        "actor = nf.ActorEnvironment('llm', nf.OpenAIEndpoint('http://127.0.0.1:9/v1', model='google/gemma-7b-it'))\n"
        "@actor.task\n"
        "async def ask(text: str) -> str:\n"
        "    llm = nf.current_actor()\n"
        "    reply = await llm.client.chat.completions.create(model=llm.model, messages=[{'role': 'user', 'content': text}])\n"
        "    return llm.model + ': ' + (reply.choices[0].message.content or '')\n"
        "@nf.workflow\n"
        "def wf(text: str = 'Moved on. Fine.') -> str:\n"
        "    return ask(text=text)\n"
    )
    with FakeServer(model="tiny-llama", api_key="run-secret-value") as fake:
        result = CliRunner().invoke(
            app,
            [
                "run",
                str(pipeline),
                "--server",
                f"llm=endpoint:{fake.base_url}",
                "--model",
                "llm=tiny-llama",
                "--api-key",
                "llm=RUN_KEY",
                "--request-timeout",
                "llm=30",
            ],
            env={"RUN_KEY": "run-secret-value", "COLUMNS": "200"},
        )
    assert result.exit_code == 0, result.output
    assert "tiny-llama" in result.output
    assert "run-secret-value" not in result.output
    bad = CliRunner().invoke(app, ["run", str(pipeline), "--model", "tiny-llama"])
    assert bad.exit_code != 0 and "ACTOR=VALUE" in str(bad.exception)
