"""Autoscaling on a burst: fixed 1, fixed max and (1, max) replicas, side by side in one run.

    python bench/autoscale.py [--burst 600] [--tail 150] [--max 4] [--latency-ms 100]

The workload: a burst (a map of `--burst` one-request items, 32 in flight), then a tail of
`--tail` requests one after another (what follows a burst in a batch job: stragglers, a
reduce step). Each replica is a fake-server process answering 4 requests at once, `--latency-ms`
each. Per configuration, in a fresh NIMFLOW_HOME with ttl_seconds=0 (every replica stops at the
end of the run): the burst's drain time (run start to its last answer) and the replica-seconds
used (replicas running, sampled every 50 ms from the run's start to its end, start-up included).
Goal: (1, max) drains within 1.2x of fixed max while using at most 0.7x its replica-seconds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import threading
import time
from typing import Any

import nimflow as nf
from nimflow.actors.launchers.process import ProcessLauncher

SAMPLE_SECONDS = 0.05


def workflow(env: nf.ActorEnvironment) -> Any:
    @env.task
    async def ask(text: str) -> float:
        llm = nf.current_actor()
        await llm.client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": text}], max_tokens=8
        )
        return time.time()

    @env.task
    async def tail(done: list[float], n: int) -> float:
        llm = nf.current_actor()
        for i in range(n):
            await llm.client.chat.completions.create(
                model=llm.model, messages=[{"role": "user", "content": f"Tail {i}."}], max_tokens=8
            )
        return max(done)

    @nf.task
    def texts(n: int) -> list[str]:
        return [f"Item {i} is short. It ends here." for i in range(n)]

    @nf.workflow
    def burst_then_tail(n: int, tail_n: int) -> Any:
        done = nf.map_task(ask, concurrency=32)(text=texts(n=n))
        return tail(done=done, n=tail_n)

    return burst_then_tail


def measure(label: str, bounds: int | tuple[int, int], args: argparse.Namespace) -> tuple[float, float]:
    """(drain seconds, replica-seconds) of one configuration."""
    command = (
        f"{shlex.quote(sys.executable)} -m nimflow.testing --host 127.0.0.1 --port {{port}} --model m "
        f"--max-concurrency 4 --latency-ms {args.latency_ms} --log-limit 0"
    )
    actor = f"bench-{label}"
    env = nf.ActorEnvironment(
        actor, nf.LocalProcess(command=command, model="m", startup_timeout=60), replica_count=bounds,
        max_concurrency=4, ttl_seconds=0, scaledown_seconds=args.scaledown,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as home:
        os.environ["NIMFLOW_HOME"] = home
        launcher = ProcessLauncher()
        replica_seconds = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal replica_seconds
            last = time.monotonic()
            while not stop.is_set():
                time.sleep(SAMPLE_SECONDS)
                now = time.monotonic()
                replica_seconds += (now - last) * sum(1 for i in launcher.find(actor) if i.running)
                last = now

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.time()
        sampler.start()
        try:
            result = nf.run(workflow(env), n=args.burst, tail_n=args.tail)
        finally:
            stop.set()
            sampler.join()
    drain = float(result.outputs) - started
    print(f"{label:>10}  drain {drain:6.2f} s   replica-seconds {replica_seconds:7.1f}", flush=True)
    return drain, replica_seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=600)
    parser.add_argument("--tail", type=int, default=150)
    parser.add_argument("--max", type=int, default=4)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--scaledown", type=float, default=2.0)
    args = parser.parse_args()
    print(f"burst {args.burst} requests + tail {args.tail}, {args.latency_ms} ms, 4 in flight per replica")
    fixed1 = measure("fixed-1", 1, args)
    fixed_max = measure(f"fixed-{args.max}", args.max, args)
    auto = measure(f"1-{args.max}", (1, args.max), args)
    drain_ratio = auto[0] / fixed_max[0]
    used_ratio = auto[1] / fixed_max[1]
    print(f"fixed-1 / fixed-{args.max} drain: {fixed1[0] / fixed_max[0]:.2f}x")
    print(
        f"(1, {args.max}) / fixed-{args.max} drain: {drain_ratio:.2f}x (goal <= 1.2x) {'ok' if drain_ratio <= 1.2 else 'MISSED'}"
    )
    print(
        f"(1, {args.max}) / fixed-{args.max} replica-seconds: {used_ratio:.2f}x (goal <= 0.7x) "
        f"{'ok' if used_ratio <= 0.7 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
