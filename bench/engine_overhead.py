"""Engine overhead: map_task over 100,000 no-op tasks, sync and async, cache off and on.

    python bench/engine_overhead.py                  # 100,000 items, 3 rounds (a few minutes)
    python bench/engine_overhead.py --n 20000 --rounds 1 --only sync-off

No model server: what is measured is nimflow itself (graph, scheduling, worker threads, one
task-run row per item written by the database thread, cache keys and entries). Modes:

  off     tasks with cache=False: no keys, no cache entries (the target: >= 20,000 items/s)
  cold    cache=True, empty cache: every item computes its key, misses, and writes an entry
  replay  cache=True, the same run again: every item is a cache hit

Each run is a fresh process with its own NIMFLOW_HOME. A thread samples the process's RSS with
the count of finished items, to show whether memory grows with the items already finished.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import ROOT, machine, markdown

import nimflow as nf

SCRIPT = Path(__file__).resolve()
nf_run = nf.run  # the public names load lazily: load them now, outside the timings
PAGE = resource.getpagesize()

# Items finished so far, bumped by the no-op tasks themselves (an int add: negligible, and
# exact enough for the memory samples even when read from another thread).
done = [0]


@nf.task
def make_items(n: int) -> list[int]:
    return list(range(n))


@nf.task
def noop_sync(x: int) -> int:
    done[0] += 1
    return x


@nf.task
async def noop_async(x: int) -> int:
    done[0] += 1
    return x


@nf.task(cache=True, cache_version="1")
def noop_sync_cached(x: int) -> int:
    done[0] += 1
    return x


@nf.task(cache=True, cache_version="1")
async def noop_async_cached(x: int) -> int:
    done[0] += 1
    return x


@nf.workflow
def sync_wf(n: int) -> list[int]:
    return nf.map_task(noop_sync)(x=make_items(n=n))


@nf.workflow
def async_wf(n: int) -> list[int]:
    return nf.map_task(noop_async)(x=make_items(n=n))


@nf.workflow
def sync_cached_wf(n: int) -> list[int]:
    return nf.map_task(noop_sync_cached)(x=make_items(n=n))


@nf.workflow
def async_cached_wf(n: int) -> list[int]:
    return nf.map_task(noop_async_cached)(x=make_items(n=n))


WORKFLOWS = {
    ("sync", False): sync_wf,
    ("async", False): async_wf,
    ("sync", True): sync_cached_wf,
    ("async", True): async_cached_wf,
}
CONFIGS = ["sync-off", "async-off", "sync-cold", "async-cold", "sync-replay", "async-replay"]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class RssSampler:
    """(items finished, RSS MB) every few ms, on a thread of the measured process."""

    def __init__(self, interval: float = 0.005) -> None:
        self.samples: list[tuple[int, float]] = []
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples.append((done[0], rss_mb()))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, items: int) -> float | None:
        """RSS when `items` had finished (the first sample at or past it)."""
        return next((rss for count, rss in self.samples if count >= items), None)


def child(config: str, n: int) -> dict[str, Any]:
    kind, mode = config.split("-")
    wf = WORKFLOWS[(kind, mode != "off")]
    if mode == "replay":  # fill the cache first, in this process, outside the measurement
        nf_run(wf, n=n)
        done[0] = 0
    base = rss_mb()
    with RssSampler() as sampler:
        started, cpu0 = time.perf_counter(), time.process_time()
        result = nf_run(wf, n=n)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    assert result.outputs == list(range(n)), "wrong outputs"
    if mode == "replay":
        assert result.cached == n, f"{result.cached} of {n} were cache hits"
    marks = {f"{k // 1000}k": sampler.at(k) for k in (n // 5, n // 2, n) if k}
    return {
        "config": config,
        "n": n,
        "wall": wall,
        "cpu": cpu,
        "rss_start": base,
        "rss_marks": marks,
        "rss_end": rss_mb(),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(config: str, n: int) -> dict[str, Any]:
    import os
    import subprocess

    with tempfile.TemporaryDirectory(prefix="nimflow-bench-") as home:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--child", config, "--n", str(n)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            env={**os.environ, "NIMFLOW_HOME": home},
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"config": config, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return dict(json.loads(lines[-1]))


def output_bytes_per_item() -> float:
    """What one output (an int in a list) costs by itself: the floor any engine pays per item."""
    return float(sys.getsizeof(10**5) + 8)


def report(results: Mapping[str, list[dict[str, Any]]], n: int) -> str:
    header = ["mode", "items/s (median)", "min-max", "CPU us/item", "client cores", "peak RSS MB"]
    marks = [f"{k // 1000}k" for k in (n // 5, n // 2, n) if k]
    header += [f"RSS at {m} MB" for m in marks] + ["growth / finished item (beyond its output)"]
    rows = []
    for config, runs in results.items():
        good = [r for r in runs if "error" not in r]
        if not good:
            rows.append([config, f"FAILED: {runs[0]['error']}"] + ["-"] * (len(header) - 2))
            continue
        rates = [r["n"] / r["wall"] for r in good]
        best = good[rates.index(statistics.median_high(rates))]
        first, last = best["rss_marks"][marks[0]], best["rss_marks"][marks[-1]]
        growth = "-"
        if first is not None and last is not None:
            per_item = (last - first) * 2**20 / (n - n // 5) - output_bytes_per_item()
            growth = f"{per_item:,.0f} B"
        rows.append(
            [
                config,
                f"{statistics.median(rates):,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                f"{statistics.median(r['cpu'] / r['n'] * 1e6 for r in good):,.1f}",
                f"{statistics.median(r['cpu'] / r['wall'] for r in good):.2f}",
                f"{max(r['peak_rss'] for r in good):,.0f}",
                *(f"{best['rss_marks'][m]:,.0f}" if best["rss_marks"][m] else "-" for m in marks),
                growth,
            ]
        )
    return markdown(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=CONFIGS)
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n)), flush=True)
        return
    configs = args.only or CONFIGS
    print(f"# engine overhead: map_task over {args.n:,} no-op items, {args.rounds} rounds; {machine()}")
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for r in range(args.rounds):
        shift = r % len(configs)
        for config in configs[shift:] + configs[:shift]:
            out = run_child(config, args.n)
            results[config].append(out)
            if "error" in out:
                print(f"  round {r + 1} {config:<13} ERROR {out['error']}", flush=True)
            else:
                print(
                    f"  round {r + 1} {config:<13} {out['n'] / out['wall']:9,.0f} items/s "
                    f"{out['cpu'] / out['n'] * 1e6:7.1f} us/item  peak RSS {out['peak_rss']:,.0f} MB",
                    flush=True,
                )
    print()
    print(report(results, args.n))
    print(
        f"\n(target: >= 20,000 items/s with the cache off; an output costs {output_bytes_per_item():.0f} B)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
