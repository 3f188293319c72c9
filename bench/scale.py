"""Scale: one actor routed across 1, 2, 4 and 8 fake replicas, each capped, through nimflow's transport.

    python bench/scale.py                        # 2,000 requests, 50 ms, 32 in flight per replica
    python bench/scale.py --cap 4 --replicas 1 2 4 8

Each replica is a fake server in its own process that answers after --latency-ms and serves at
most --cap requests at once (one replica's ideal: cap / latency). The client is what an actor
task uses: nimflow.llm's routed AsyncOpenAI client over all the replicas (fewest in flight first,
per-replica cap = the server's cap), with `chat_many` sending the pipeline's request for every
document. Reported: items/s and its ratio to N x the one-replica figure measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import (
    MAX_TOKENS,
    MODEL,
    PROMPT,
    SYSTEM_PROMPT,
    Measurement,
    ServerProbe,
    fake_servers,
    machine,
    markdown,
    run_child,
)

from nimflow.llm import chat_many
from nimflow.llm.client import build_actor_context, close_actor_context

SCRIPT = Path(__file__).resolve()


async def routed(params: Mapping[str, Any]) -> list[str]:
    """The body of an actor task: chat_many over the routed client, as generate_summary does."""
    ctx = build_actor_context(
        "scale", MODEL, params["urls"], max_in_flight_per_replica=params["cap"], served_by="fake"
    )
    try:
        answers = await chat_many(
            [PROMPT.format(text=doc) for doc in params["docs"]],
            system=SYSTEM_PROMPT,
            model=MODEL,
            max_tokens=MAX_TOKENS,
            ctx=ctx,
        )
    finally:
        await close_actor_context(ctx)
    return [a.text if a.ok and a.text is not None else f"error: {a.error}" for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--cap", type=int, default=32, help="requests in flight per replica")
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 4, 8])
    args, rest = parser.parse_known_args()
    if "--child" in rest:
        from harness import child_main

        child_main({"routed": routed}, rest)
        return
    one = args.cap / (args.latency_ms / 1000)
    print(
        f"# scale: N={args.n}, {args.rounds} rounds, {args.latency_ms:g} ms, {args.cap} in flight per replica "
        f"(one replica's ideal {one:,.0f} items/s); {machine()}",
        flush=True,
    )
    counts = sorted(set(args.replicas) | {1})
    results: dict[int, list[Measurement]] = {c: [] for c in counts}
    with fake_servers(max(counts), latency_ms=args.latency_ms, max_concurrency=args.cap) as servers:
        for r in range(args.rounds):
            shift = r % len(counts)
            for count in counts[shift:] + counts[:shift]:
                used = servers[:count]
                params = {"n": args.n, "urls": [s.base_url for s in used], "cap": args.cap}
                with ServerProbe(used) as probe:
                    m = run_child(SCRIPT, "routed", params)
                m.server = probe.stats
                results[count].append(m)
                status = "ok" if m.error is None else f"ERROR {m.error}"
                print(
                    f"  round {r + 1} {count} replicas {m.rate:8,.0f} items/s {m.cpu_us_per_item:7,.0f} us/item "
                    f"peak in flight {m.server.peak_in_flight:4}  {status}",
                    flush=True,
                )
    base = _median([m.rate for m in results[1] if m.error is None])
    header = [
        "replicas",
        "ideal items/s",
        "items/s (median)",
        "min-max",
        "ratio to N x one replica",
        "CPU us/item",
        "client cores",
        "server peak in flight (sum)",
        "server peak waiting",
        "check",
    ]
    rows = []
    for count, ms in results.items():
        good = [m for m in ms if m.error is None]
        if not good:
            rows.append([str(count)] + ["-"] * (len(header) - 2) + [f"FAILED: {ms[0].error}"])
            continue
        rates = [m.rate for m in good]
        rate = _median(rates)
        rows.append(
            [
                str(count),
                f"{one * count:,.0f}",
                f"{rate:,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                f"{rate / (count * base):.2f}" if base else "-",
                f"{_median([m.cpu_us_per_item for m in good]):,.0f}",
                f"{_median([m.cpu / m.wall for m in good]):.2f}",
                str(max(m.server.peak_in_flight for m in good)),
                str(max(m.server.peak_waiting for m in good)),
                f"{len(good)}/{len(ms)} ok",
            ]
        )
    print()
    print(markdown(header, rows))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


if __name__ == "__main__":
    main()
