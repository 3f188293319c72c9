"""Runs that start together on a cold pool: one critical section per home, the later ones adopt."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

RACE = textwrap.dedent(
    """
    import json, pathlib, sys, time, anyio
    from nimflow._store import Store
    from nimflow.actors.environment import ActorEnvironment
    from nimflow.actors.pool import ActorSession
    from nimflow.actors.servers import NIM, NIMSecrets

    async def main():
        spec = NIM(image=sys.argv[1], secrets=NIMSecrets(None, None), model=sys.argv[3], port=0, gpu=0,
                   mem="256Mi", shm_size="64Mi", startup_timeout=60)
        env = ActorEnvironment(sys.argv[2], spec, replica_count=2, ttl_seconds=60)
        store = Store.open()
        folder = pathlib.Path(sys.argv[4])
        (folder / f"ready-{sys.argv[5]}").touch()
        for _ in range(60_000):  # every process acquires at the same moment (bounded: 60 s)
            if (folder / "go").exists():
                break
            time.sleep(0.001)
        async with ActorSession(store) as session:
            ctx = await session.context_for(env)
            reply = await ctx.client.chat.completions.create(
                model=ctx.model, messages=[{"role": "user", "content": "Raced. Fine."}])
            print(json.dumps({"urls": ctx.replica_urls, "answer": reply.choices[0].message.content}))
        store.close()

    anyio.run(main)
    """
)


def test_four_runs_started_together_share_one_container_per_replica(
    docker_client: Any, fake_image: str, actor_name: str, tmp_path: Path
) -> None:
    from nimflow._store import Store

    Store.open().close()  # the schema exists first: this test is about the servers, not the tables
    argv = [sys.executable, "-c", RACE, fake_image, actor_name, "meta/llama3-8b-instruct", str(tmp_path)]
    procs = [
        subprocess.Popen([*argv, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["answer"] == "Raced. Fine." for r in results)
    assert len({tuple(r["urls"]) for r in results}) == 1  # every run used the same two replicas
    found = docker_client.containers.list(all=True, filters={"label": [f"nimflow.actor={actor_name}"]})
    assert sorted(c.labels["nimflow.replica"] for c in found) == ["0", "1"]
    assert all(c.status == "running" for c in found)
