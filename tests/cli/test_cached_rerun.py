"""A fully cached rerun names its actors' servers without building their HTTP client; the names,
and so the cache keys, are the ones the client would have given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx

import nimflow as nf
from nimflow._store import Store
from nimflow.actors.identity import serving_identity
from nimflow.actors.pool import ActorSession
from nimflow.testing import FakeServer

# No model named: the identity is the model the endpoint's /v1/models lists.
endpoint_actor = nf.ActorEnvironment("listed", nf.OpenAIEndpoint("http://127.0.0.1:9/v1"), ttl_seconds=0)
nim_actor = nf.ActorEnvironment(
    "nim", nf.NIM(image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"), ttl_seconds=0
)


@endpoint_actor.task(cache=True, cache_version="1")
async def answer(text: str) -> str:
    llm = nf.current_actor()
    reply = await llm.client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


@nf.workflow
def wf(texts: list[str]) -> list[str]:
    return nf.map_task(answer)(text=texts)


async def _identities(servers: dict[str, str]) -> tuple[list[str], list[bool]]:
    """Each actor's identity from a fresh session, and whether that session built its client."""
    store = Store.open()
    try:
        names, built = [], []
        for actor in (endpoint_actor, nim_actor):
            async with ActorSession(store, servers) as session:
                names.append(await session.identity(actor))
                built.append(session._http is not None)
        return names, built
    finally:
        store.close()


async def _with_the_shared_client(servers: dict[str, str]) -> list[str]:
    """The identities as the session's own client (CA bundle loaded) gives them."""
    store = Store.open()
    try:
        async with ActorSession(store, servers) as session, httpx.AsyncClient(trust_env=False) as http:
            return [
                await serving_identity(session.server_for(actor), http)
                for actor in (endpoint_actor, nim_actor)
            ]
    finally:
        store.close()


def test_identities_are_unchanged_and_no_client_is_built() -> None:
    with FakeServer(model="listed-model") as fake:
        servers = {"listed": f"endpoint:{fake.base_url}"}
        names, built = anyio.run(_identities, servers)
        assert names == anyio.run(_with_the_shared_client, servers)
    assert names[0] == "endpoint:listed-model"  # asked the server: /v1/models was read
    assert names[1].startswith("nim:nvcr.io/nim/meta/llama3-8b-instruct:1.0.0:")
    assert built == [False, False]


def test_a_rerun_hits_the_keys_of_the_first_run() -> None:
    texts = [f"Sentence {i} is here. It ends." for i in range(3)]
    with FakeServer(model="listed-model") as fake:
        servers = {"listed": f"endpoint:{fake.base_url}"}
        first = nf.run(wf, texts=texts, servers=servers)
        again = nf.run(wf, texts=texts, servers=servers)
        chats = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert first.cached == 0 and again.cached == len(texts)
    assert again.outputs == first.outputs and len(chats) == len(texts)


PIPELINE = """
import nimflow as nf

@nf.task(cache=True, cache_version="1")
def square(x: int) -> int:
    return x * x

@nf.workflow
def squares(xs: list[int]) -> list[int]:
    return nf.map_task(square)(x=xs)
"""


def test_the_cli_runs_without_typer(tmp_path: Path) -> None:
    # typer converts each parameter through a pydantic TypeAdapter; `run` is a click command.
    (tmp_path / "squares.py").write_text(PIPELINE)
    script = (
        "import sys\nfrom nimflow.cli import invoke\n"
        "code = invoke(['run', 'squares.py', '--xs', '[1, 2, 3]'])\n"
        "print(code, 'typer' in sys.modules)\n"
    )
    env = {**os.environ, "NIMFLOW_HOME": str(tmp_path / "home")}
    for _ in range(2):  # the first run computes, the second is a cache hit
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip().splitlines()[-1] == "0 False", done.stdout + done.stderr
    assert "3 cache hits" in done.stdout
