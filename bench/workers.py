"""`nimflow run --workers N`: a run's req/s with 1 and with N processes, side by side.

    python bench/workers.py                    # N=2000, workers 1 and 2, 3 rounds alternating
    python bench/workers.py --workers 1 2 4 --rounds 2 --latency-ms 0

The CLI runs bench/arxiv_shape.py in a fresh NIMFLOW_HOME (cache on, nothing cached: every item
computed; the workers share a map's items through claims, which --no-cache does not take) against
the fake server in its own process, on a pseudo-terminal as a user sees it; the contenders
alternate round by round. Goal on a 2-core machine: 2 workers >= 1.5x one worker's items/s.
The load average is printed with each measurement: on a shared machine the other processes take
the cores the workers would use, and CPU seconds per item are the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Measurement, check_answers, fake_servers, machine, markdown, run_process
from throughput import cli_command, last_outputs


def measure(base_url: str, n: int, workers: int) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="nimflow-bench-") as home:
        command = [*cli_command(base_url, n, no_cache=False), "--workers", str(workers)]
        m = run_process(command, n, f"workers={workers}", env={"NIMFLOW_HOME": home})
        if m.error is None:
            m.error = check_answers(last_outputs(home), n)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--latency-ms", type=float, default=50)
    args = parser.parse_args()
    print(f"# --workers: N={args.n}, {args.rounds} rounds, workers {args.workers}; {machine()}")
    results: dict[int, list[Measurement]] = {w: [] for w in args.workers}
    with fake_servers(latency_ms=args.latency_ms, max_concurrency=256) as (server,):
        for r in range(args.rounds):
            for w in args.workers:
                load = os.getloadavg()[0]
                m = measure(server.base_url, args.n, w)
                print(
                    f"  round {r + 1}/{args.rounds} workers={w} (load {load:.1f}): {m.rate:.0f} items/s, "
                    f"{m.wall:.2f} s wall, {m.cpu:.2f} s CPU" + (f"  ERROR {m.error}" if m.error else ""),
                    flush=True,
                )
                results[w].append(m)
    base = statistics.median(m.rate for m in results[args.workers[0]])
    rows = []
    for w, ms in results.items():
        rate = statistics.median(m.rate for m in ms)
        cpu = statistics.median(m.cpu_us_per_item for m in ms)
        goal = ">= 1.5" if w == 2 else ""
        ok = ("met" if rate / base >= 1.5 else "missed") if goal else ""
        rows.append([str(w), f"{rate:.0f}", f"{cpu:.0f}", f"{rate / base:.2f}", goal, ok])
    print(markdown(["workers", "items/s", "CPU us/item", f"x {args.workers[0]} worker", "goal", ""], rows))


if __name__ == "__main__":
    main()
