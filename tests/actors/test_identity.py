"""Cache identity names what answers (the model as /v1/models reports it), never where it listens."""

from __future__ import annotations

import anyio

import nimflow as nf
from nimflow._store import Store
from nimflow.actors.pool import ActorSession
from nimflow.testing import FakeServer

# No model named: the endpoint's identity is the model its /v1/models lists.
actor = nf.ActorEnvironment("moving", nf.OpenAIEndpoint("http://127.0.0.1:9/v1"), ttl_seconds=0)


@actor.task(cache=True, cache_version="1")
async def answer(text: str) -> str:
    llm = nf.current_actor()
    reply = await llm.client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


@nf.workflow
def wf(texts: list[str]) -> list[str]:
    return nf.map_task(answer)(text=texts)


TEXTS = [f"Sentence {i} is here. It ends." for i in range(4)]


def chats(server: FakeServer) -> int:
    return len([r for r in server.requests if r.path == "/v1/chat/completions"])


def test_the_same_model_moved_to_another_port_is_a_cache_hit() -> None:
    with FakeServer(model="served-model") as first:
        done = nf.run(wf, texts=TEXTS, servers={"moving": f"endpoint:{first.base_url}"})
    with FakeServer(model="served-model") as moved:
        assert moved.base_url != first.base_url
        again = nf.run(wf, texts=TEXTS, servers={"moving": f"endpoint:{moved.base_url}"})
        assert chats(moved) == 0  # nothing recomputed
    assert again.cached == len(TEXTS) and again.outputs == done.outputs
    with FakeServer(model="another-model") as other:
        fresh = nf.run(wf, texts=TEXTS, servers={"moving": f"endpoint:{other.base_url}"})
        assert chats(other) == len(TEXTS)  # another model answers: computed again
    assert fresh.cached == 0


def test_endpoint_identity_is_the_listed_model() -> None:
    with FakeServer(model="listed-model") as fake:

        async def main() -> str:
            store = Store.open()
            try:
                async with ActorSession(store, {"moving": f"endpoint:{fake.base_url}"}) as session:
                    return await session.identity(actor)
            finally:
                store.close()

        # The pipeline names no model, so the override has none either: /v1/models says it.
        assert anyio.run(main) == "endpoint:listed-model"
