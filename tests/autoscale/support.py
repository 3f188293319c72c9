"""Shared pieces of the autoscaling tests: an autoscaled actor of fake-server processes."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable

import httpx
from sqlmodel import select

import nimflow as nf
from nimflow._store import ActorReplica, Store
from nimflow._tables import ScaleEvent
from nimflow.actors.launchers.process import ProcessLauncher

MODEL = "fake-model"
# Each replica answers 4 requests at once, 100 ms each: 32 in flight make a backlog for 4 replicas.
FAKE = (
    f"{shlex.quote(sys.executable)} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model {MODEL} "
    "--max-concurrency 4 --latency-ms 100"
)


def fake_server(command: str = FAKE) -> nf.LocalProcess:
    return nf.LocalProcess(command=command, model=MODEL, startup_timeout=30)


def make_workflow(env: nf.ActorEnvironment) -> Callable[..., object]:
    @env.task(cache=True, cache_version="1")
    async def ask(text: str) -> tuple[str, int]:
        llm = nf.current_actor()
        reply = await llm.client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": text}], max_tokens=8
        )
        # How many replicas routed requests when this one was answered.
        return reply.choices[0].message.content or "", len(llm.replica_urls)

    @nf.task
    def texts(n: int) -> list[str]:
        return [f"Item {i} is short. It ends here." for i in range(n)]

    @nf.workflow
    def burst(n: int = 400) -> list[tuple[str, int]]:
        return nf.map_task(ask, concurrency=32)(text=texts(n=n))

    return burst


def running(actor: str) -> list[int]:
    return sorted(i.replica for i in ProcessLauncher().find(actor) if i.running)


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll until true (bounded); the caller asserts on the state it waited for, not on time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def replica_rows(actor: str) -> list[ActorReplica]:
    store = Store.open()
    try:
        with store.session() as session:
            return list(session.exec(select(ActorReplica).where(ActorReplica.actor == actor)))
    finally:
        store.close()


def events(run_id: str | None = None) -> list[ScaleEvent]:
    store = Store.open()
    try:
        with store.session() as session:
            query = select(ScaleEvent)
            if run_id is not None:
                query = query.where(ScaleEvent.run_id == run_id)
            return list(session.exec(query))
    finally:
        store.close()


def served(base_url: str) -> int:
    """Chat requests the fake server at base_url logged."""
    log = httpx.get(base_url.removesuffix("/v1") + "/_fake/log", timeout=10).json()
    return sum(1 for e in log["requests"] if e["path"] == "/v1/chat/completions")
