"""A workflow whose actor runs on a Ray cluster: two fake-server replicas, one logical GPU each.

Settings come from the environment so a second process runs the very same definition."""

from __future__ import annotations

import os
import sys

import nimflow as nf

MODEL = "fake-model"
LATENCY_MS = os.environ.get("NIMFLOW_TEST_LATENCY_MS", "0")
FAKE = (
    f"{sys.executable} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model {MODEL} "
    f"--latency-ms {LATENCY_MS}"
)

IMAGE = os.environ.get("NIMFLOW_TEST_IMAGE")  # the fake-server image: a container on the node instead

server: nf.LocalProcess | nf.Container = nf.LocalProcess(
    command=FAKE,
    model=MODEL,
    health_endpoint="/v1/health/ready",
    gpu=1,
    env={"NIMFLOW_TEST_VERSION": os.environ.get("NIMFLOW_TEST_VERSION", "1")},
    startup_timeout=60,
)
if IMAGE:  # no GPU: the engine here has no NVIDIA runtime to give a container one
    server = nf.Container(
        IMAGE, args=["--model", MODEL, "--host", "127.0.0.1", "--port", "{port}"], port=0, model=MODEL,
        health_endpoint="/v1/health/ready", pull=False, startup_timeout=60,
    )  # fmt: skip
actor = nf.ActorEnvironment(
    os.environ.get("NIMFLOW_TEST_ACTOR", "ray-actor"),
    server=server,
    replica_count=2,
    ttl_seconds=float(os.environ.get("NIMFLOW_TEST_TTL", "600")),
    # "cli": no placement in the code, so that `--placement ray-actor=ray:...` gives it.
    placement=None if os.environ.get("NIMFLOW_TEST_PLACEMENT") == "cli" else nf.Ray(),
)


@actor.task
async def ask(item: str) -> str:
    llm = nf.current_actor()
    response = await llm.client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": item}], max_tokens=16
    )
    return response.choices[0].message.content or ""


CONCURRENCY = int(os.environ.get("NIMFLOW_TEST_CONCURRENCY", "0")) or None


@nf.workflow
def answers(items: list[str]) -> list[str]:
    return nf.map_task(ask, concurrency=CONCURRENCY)(item=items)


if __name__ == "__main__":
    import json
    import logging
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    # python ray_pipeline.py ITEMS_JSON RESULT_FILE (stdout also carries Ray's own messages)
    result = nf.run(answers, items=json.loads(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps({"outputs": result.outputs, "served_by": result.served_by}))
