"""An autoscaled actor on a Ray cluster: (1, 3) replicas of the fake server, one logical GPU each,
two requests at a time each, so a burst of concurrent items makes a backlog for three replicas.

Settings come from the environment (NIMFLOW_TEST_LOG_DIR: where each replica leaves its log)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import nimflow as nf

MODEL = "fake-model"
SERVER = Path(__file__).with_name("logged_fake.py")
LOG_DIR = os.environ.get("NIMFLOW_TEST_LOG_DIR", ".")
LATENCY_MS = os.environ.get("NIMFLOW_TEST_LATENCY_MS", "400")

server = nf.LocalProcess(
    command=f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))} {shlex.quote(LOG_DIR)} {{port}} "
    f"{LATENCY_MS} 2",
    model=MODEL,
    health_endpoint="/v1/health/ready",
    gpu=1,
    startup_timeout=60,
)
actor = nf.ActorEnvironment(
    "ray-burst",
    server=server,
    replica_count=(1, 3),
    max_concurrency=2,
    scaledown_seconds=float(os.environ.get("NIMFLOW_TEST_SCALEDOWN", "2")),
    ttl_seconds=600,
    placement=nf.Ray(),
)


@actor.task
async def ask(item: str) -> str:
    llm = nf.current_actor()
    response = await llm.client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": item}], max_tokens=16
    )
    return response.choices[0].message.content or ""


@nf.workflow
def burst(items: list[str]) -> list[str]:
    return nf.map_task(ask, concurrency=12)(item=items)


if __name__ == "__main__":
    import json

    # python ray_burst.py ITEMS_JSON RESULT_FILE
    result = nf.run(burst, items=json.loads(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps({"outputs": result.outputs, "run_id": result.run_id}))
