"""Shared pieces of the benchmarks: the workload, the fake server, child processes, the table.

Each measurement runs in a fresh child process (the benchmark script re-run with ``--child``), so
contenders do not share warm connections, caches or heap, and the CPU time measured is that
contender's alone (``time.process_time`` counts every thread of the process). Meanwhile the
parent samples the fake server's ``/v1/metrics`` and its CPU time from /proc, which shows
whether the server, not the client, was the limit.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import random
import re
import resource
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is run by path; import the package and bench modules
    sys.path.insert(0, str(ROOT))

# The request of pipelines/arxiv_summary.py (bench/arxiv_shape.py checks that they still match):
# the LoRA adapter of the pipeline's default repo_id, served beside the base model.
BASE_MODEL = "meta/llama3-8b-instruct"
MODEL = "OrpoLlama-3-8B-Instruct"
SYSTEM_PROMPT = "You are a helpful assistant that summarizes research papers for a busy reader."
PROMPT = (
    "Summarize the following paper in a few sentences: its question, its method and its findings.\n\n{text}"
)
MAX_TOKENS = 512

# --------------------------------------------------------------------------------------------------
# The workload

_WORDS = [
    "model",
    "inference",
    "batch",
    "latency",
    "throughput",
    "replica",
    "adapter",
    "token",
    "prompt",
    "server",
    "cache",
    "gradient",
    "dataset",
    "benchmark",
    "attention",
    "layer",
    "transformer",
    "context",
    "window",
    "quantization",
    "memory",
    "kernel",
    "scheduler",
    "request",
    "queue",
    "sample",
    "evaluation",
    "accuracy",
    "baseline",
    "training",
    "corpus",
    "vector",
    "embedding",
    "retrieval",
    "decoding",
    "sampling",
    "temperature",
    "precision",
    "recall",
    "distillation",
    "pruning",
    "sparsity",
]


def make_documents(n: int, chars: int = 2_000, seed: int = 0) -> list[str]:
    """`n` deterministic documents of about `chars` characters.

    Each opens with a sentence naming its index; the fake server's summary quotes the opening
    sentences, so every answer can be matched to its own document.
    """
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        parts = [f"Document {i} studies {rng.choice(_WORDS)} {rng.choice(_WORDS)}."]
        size = len(parts[0])
        while size < chars:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 16))]
            sentence = " ".join(words).capitalize() + "."
            parts.append(sentence)
            size += len(sentence) + 1
        docs.append(" ".join(parts))
    return docs


def batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def check_answers(answers: Sequence[Any], n: int) -> str | None:
    """None when there are `n` answers and answer i quotes document i; else what is wrong."""
    if len(answers) != n:
        return f"{len(answers)} answers for {n} documents"
    for i, answer in enumerate(answers):
        if not isinstance(answer, str) or f"Document {i} " not in answer:
            return f"answer {i} is not about document {i}: {str(answer)[:80]!r}"
    return None


def request_body(doc: str) -> dict[str, Any]:
    """The chat completion every contender sends for one document."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": PROMPT.format(text=doc)},
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
    }


# --------------------------------------------------------------------------------------------------
# The fake server and what it says about itself


@dataclass
class ServerStats:
    peak_in_flight: int = 0
    peak_waiting: int = 0
    cpu_seconds: float = 0.0  # the server process's CPU during the measurement
    # CPU the rest of the machine used meanwhile (other programs, not the client, server or
    # this harness), in seconds: on a shared machine it says how far to trust the wall times.
    others_cpu_seconds: float = 0.0
    window_seconds: float = 0.0  # how long the probe watched (the child's start-up included)

    def merge(self, other: ServerStats) -> ServerStats:
        return ServerStats(
            max(self.peak_in_flight, other.peak_in_flight),
            max(self.peak_waiting, other.peak_waiting),
            self.cpu_seconds + other.cpu_seconds,
            self.others_cpu_seconds + other.others_cpu_seconds,
            self.window_seconds + other.window_seconds,
        )


_GAUGE = re.compile(r"^nimflow_fake_requests_(in_flight|waiting)\{[^}]*\} (\d+)", re.MULTILINE)


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProbe:
    """Samples the servers' in-flight and waiting gauges on a thread of the (idle) parent process."""

    def __init__(self, servers: Sequence[Any], interval: float = 0.01) -> None:
        self._servers = list(servers)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats = ServerStats()
        self._cpu0 = self._busy0 = self._ours0 = self._t0 = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            in_flight = waiting = 0
            for server in self._servers:
                try:
                    with urllib.request.urlopen(server.url + "/v1/metrics", timeout=2) as response:
                        text = response.read().decode()
                except OSError:
                    continue
                for name, value in _GAUGE.findall(text):
                    if name == "in_flight":
                        in_flight += int(value)
                    else:
                        waiting += int(value)
            self._stats.peak_in_flight = max(self._stats.peak_in_flight, in_flight)
            self._stats.peak_waiting = max(self._stats.peak_waiting, waiting)
            self._stop.wait(self._interval)

    def __enter__(self) -> ServerProbe:
        self._cpu0 = sum(process_cpu_seconds(s.pid) for s in self._servers)
        self._busy0 = machine_busy_seconds()
        self._t0 = time.perf_counter()
        self._ours0 = _own_and_children_cpu()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stats.cpu_seconds = sum(process_cpu_seconds(s.pid) for s in self._servers) - self._cpu0
        ours = _own_and_children_cpu() - self._ours0  # this harness and the waited-for client
        busy = machine_busy_seconds() - self._busy0
        self._stats.others_cpu_seconds = max(0.0, busy - ours - self._stats.cpu_seconds)
        self._stats.window_seconds = time.perf_counter() - self._t0

    @property
    def stats(self) -> ServerStats:
        return self._stats


def _own_and_children_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def fake_servers(count: int = 1, **options: Any) -> Iterator[list[Any]]:
    """`count` fake servers, each in its own process, on free ports of 127.0.0.1."""
    from nimflow.testing import spawn

    options = {"log_limit": 0, "host": "127.0.0.1", "model": BASE_MODEL, "adapters": [MODEL], **options}
    servers: list[Any] = []
    try:
        for _ in range(count):
            servers.append(spawn(**options))
        yield servers
    finally:
        for server in servers:
            server.stop()


# --------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Measurement:
    contender: str
    items: int
    wall: float  # seconds
    cpu: float  # client CPU seconds, all its threads (and its children's, for a CLI run)
    error: str | None = None
    rss_mb: float = 0.0  # peak RSS of the client process
    server: ServerStats = field(default_factory=ServerStats)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.items / self.wall if self.wall else 0.0

    @property
    def cpu_us_per_item(self) -> float:
        return self.cpu / self.items * 1e6 if self.items else 0.0


Contender = Callable[[Mapping[str, Any]], Awaitable[list[Any]] | list[Any]]


def child_main(contenders: Mapping[str, Contender], argv: Sequence[str]) -> None:
    """In the child: run one contender on the params, time it, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--params", required=True)
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    run = contenders[args.child]
    n = params["n"]
    error: str | None = None
    started, cpu0 = time.perf_counter(), time.process_time()
    try:
        # Inside the timing: the nimflow pipeline makes its documents in a task, so everyone does.
        result = run({**params, "docs": make_documents(n)})
        answers = _await(result)
    except Exception as exc:  # reported in the table rather than ending the benchmark
        answers, error = [], f"{type(exc).__name__}: {exc}"[:300]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    error = error or check_answers(answers, n)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"items": n, "wall": wall, "cpu": cpu, "error": error, "rss_mb": rss}), flush=True)


def _await(result: Any) -> Any:
    import asyncio
    import inspect

    if inspect.isawaitable(result):
        return asyncio.run(_wrap(result))
    return result


async def _wrap(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def run_child(
    script: Path,
    contender: str,
    params: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> Measurement:
    """Run `script --child contender` in a fresh interpreter and read its measurement."""
    command = [sys.executable, str(script), "--child", contender, "--params", json.dumps(params)]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return Measurement(
            contender, params["n"], 0.0, 0.0, error=f"exit {proc.returncode}: {' | '.join(tail)}"
        )
    data = json.loads(lines[-1])
    return Measurement(
        contender, data["items"], data["wall"], data["cpu"], error=data["error"], rss_mb=data["rss_mb"]
    )


def run_process(
    command: Sequence[str],
    items: int,
    contender: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> Measurement:
    """Time a whole command (the CLI) on a pseudo-terminal, as a user would see it (live progress
    included): wall clock, and its CPU and peak RSS from wait4()."""
    master, slave = pty.openpty()
    # A wide terminal, so that progress lines are drawn as they would be on a desktop.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm-256color", **(env or {})},
    )
    os.close(slave)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = b"".join(chunks).decode(errors="replace")
    error = None
    if proc.returncode != 0:
        tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
        error = f"exit {proc.returncode}: {' | '.join(tail)}"
    return Measurement(
        contender,
        items,
        wall,
        usage.ru_utime + usage.ru_stime,
        error=error,
        rss_mb=usage.ru_maxrss / 1024,
        extra={"output": output[-4000:]},
    )


def alternate(
    names: Sequence[str], rounds: int, measure: Callable[[str], Measurement], verbose: bool = True
) -> dict[str, list[Measurement]]:
    """Measure every contender once per round, the order rotated each round so none always goes first."""
    results: dict[str, list[Measurement]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in list(names[shift:]) + list(names[:shift]):
            m = measure(name)
            results[name].append(m)
            if verbose:
                status = "ok" if m.error is None else f"ERROR {m.error}"
                print(
                    f"  round {r + 1}/{rounds} {name:<28} {m.rate:9,.0f} items/s  "
                    f"{m.cpu_us_per_item:8,.0f} us/item  {m.wall:6.2f} s  {status}",
                    flush=True,
                )
    return results


# --------------------------------------------------------------------------------------------------
# Reporting


def machine() -> str:
    import platform

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0))
    return f"{cores} cores ({usable} usable), Python {platform.python_version()}, {platform.machine()}"


def table(results: Mapping[str, Sequence[Measurement]], limit: str | None, ideal: float | None = None) -> str:
    """Markdown table: median items/s, spread, ratio to the limit contender, CPU us/item, server gauges."""
    header = [
        "contender",
        "items/s (median)",
        "min-max",
        "ratio to (a)",
        "CPU us/item",
        "client cores",
        "peak RSS MB",
        "server peak in flight",
        "server peak waiting",
        "server CPU %",
        "others' cores",
        "check",
    ]
    if ideal:
        header.insert(3, "of ideal")
    limit_rate = _median_rate(results[limit]) if limit and results.get(limit) else None
    rows = []
    for name, ms in results.items():
        good = [m for m in ms if m.error is None]
        errors = [m.error for m in ms if m.error is not None]
        if not good:
            rows.append([name] + ["-"] * (len(header) - 2) + [f"FAILED: {errors[0]}"])
            continue
        rate = _median_rate(good)
        rates = [m.rate for m in good]
        cpu = statistics.median(m.cpu_us_per_item for m in good)
        cores = statistics.median(m.cpu / m.wall for m in good if m.wall)
        server = good[0].server
        for m in good[1:]:
            server = server.merge(m.server)
        server_cpu = statistics.median(m.server.cpu_seconds / m.wall * 100 for m in good if m.wall)
        others = statistics.median(
            m.server.others_cpu_seconds / m.server.window_seconds for m in good if m.server.window_seconds
        )
        row = [
            name,
            f"{rate:,.0f}",
            f"{min(rates):,.0f}-{max(rates):,.0f}",
            f"{rate / limit_rate:.2f}" if limit_rate else "-",
            f"{cpu:,.0f}",
            f"{cores:.2f}",
            f"{max(m.rss_mb for m in good):,.0f}",
            str(server.peak_in_flight),
            str(server.peak_waiting),
            f"{server_cpu:.0f}",
            f"{others:.2f}",
            f"{len(good)}/{len(ms)} ok" + (f"; {errors[0]}" if errors else ""),
        ]
        if ideal:
            row.insert(3, f"{rate / ideal:.2f}")
        rows.append(row)
    return markdown(header, rows)


def _median_rate(ms: Sequence[Measurement]) -> float:
    good = [m.rate for m in ms if m.error is None]
    return statistics.median(good) if good else 0.0


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def save(path: Path, payload: Mapping[str, Any]) -> None:
    """Raw measurements as JSON beside the printed table, for later comparison."""

    def default(o: Any) -> Any:
        if isinstance(o, Measurement | ServerStats):
            return asdict(o)
        raise TypeError(type(o))

    path.write_text(json.dumps(payload, default=default, indent=1))
