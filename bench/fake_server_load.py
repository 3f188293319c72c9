"""Load on the fake OpenAI server: sustained requests/s from a client in another process.

    python bench/fake_server_load.py [--requests 20000] [--concurrency 256] [--latency-ms 0]

The server runs in its own process (nimflow.testing.spawn); this process is the client: an
aiohttp session with ``concurrency`` keep-alive connections and as many workers, each sending
non-streaming chat completions until ``requests`` have been answered (bounded in count, and
in time by --deadline). Prints req/s and, with a latency, the ratio to the ideal
concurrency / latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nimflow.testing import spawn

PROMPT = (
    "Summarize the following abstract:\n\n"
    "We study batch inference for large language models. Our method keeps model servers warm "
    "between runs. It cuts the cost of cold starts by an order of magnitude. We evaluate it on "
    "arXiv papers and show that throughput grows with the number of replicas."
)


async def drive(url: str, total: int, concurrency: int, deadline: float) -> tuple[int, int, float]:
    body = json.dumps(
        {
            "model": "meta/llama3-8b-instruct",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 64,
        }
    ).encode()
    headers = {"content-type": "application/json"}
    sent = 0
    ok = 0
    failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + deadline

        async def worker() -> None:
            nonlocal sent, ok, failed
            while sent < total and time.monotonic() < stop_at:
                sent += 1
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        failed += 1

        # Warm the connections up before timing.
        await asyncio.gather(*(session.get(url.replace("/chat/completions", "/models")) for _ in range(8)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return ok, failed, elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to tell whose core is saturated."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--deadline", type=float, default=120.0, help="stop sending after this many seconds")
    args = parser.parse_args()
    with spawn(latency_ms=args.latency_ms, log_limit=0) as server:
        server_cpu = cpu_seconds(server.pid)
        client_cpu = time.process_time()
        ok, failed, elapsed = asyncio.run(
            drive(server.base_url + "/chat/completions", args.requests, args.concurrency, args.deadline)
        )
        server_cpu = cpu_seconds(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    rate = ok / elapsed
    print(f"{ok} ok, {failed} failed in {elapsed:.2f} s: {rate:,.0f} req/s at concurrency {args.concurrency}")
    per_request = server_cpu / max(ok + failed, 1)
    print(
        f"server CPU {server_cpu:.2f} s ({per_request * 1e6:.0f} us/request, one core would sustain "
        f"{1 / per_request:,.0f} req/s); client CPU {client_cpu:.2f} s"
    )
    if args.latency_ms:
        ideal = args.concurrency / (args.latency_ms / 1000)
        print(f"ideal {ideal:,.0f} req/s; ratio {rate / ideal:.2f}")


if __name__ == "__main__":
    main()
