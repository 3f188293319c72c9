"""Throughput: summarize N generated documents, one chat completion each, against the fake server.

    python bench/throughput.py                      # 50 ms and 0 ms, 3 rounds, N=2000 (a few minutes)
    python bench/throughput.py --latency-ms 50 --rounds 5 --only a b c-inproc

The fake server answers after --latency-ms and caps requests in flight at --server-cap (256: the
ideal at 50 ms is 256 / 0.05 = 5,120 requests/s). Contenders, each in a fresh process, run
alternately for several rounds:

  (a)        raw asyncio + aiohttp + a semaphore: the physical limit of a Python client
  (b)        the official AsyncOpenAI + asyncio.gather + a semaphore, its default HTTP client
  (b')       the same with openai.DefaultAioHttpClient()
  (c) chat_many  nimflow, nf.run(...) of pipelines/arxiv_summary.py's actor task (`chat_many`) and
             result table on generated documents (bench/arxiv_shape.py), cache off
  (c) gather  the same map, its actor task an asyncio.gather on nf.current_actor().client
  (c) extract_many  the same map, its actor task `extract_many` into a pydantic model
  (c) CLI    the same through `python -m nimflow run ... --no-cache` on a pseudo-terminal (live
             progress drawn); its time and CPU include interpreter start-up and imports

Then the cache replay: a first run with the cache on in a fresh NIMFLOW_HOME, then a second run of
the same items, fully cached, in a new process (in-process API and CLI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import openai
from harness import (
    ROOT,
    Contender,
    Measurement,
    ServerProbe,
    alternate,
    check_answers,
    fake_servers,
    machine,
    markdown,
    request_body,
    run_child,
    run_process,
    save,
    table,
)

# Imported here, before any timing starts: a contender's time is its work, not its imports.
import nimflow as nf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import arxiv_shape

import nimflow.actors.pool
import nimflow.llm.client

nf_run = nf.run  # the public names load lazily: load them now, outside the timings

SCRIPT = Path(__file__).resolve()
PIPELINE = SCRIPT.parent / "arxiv_shape.py"
ACTOR = "nim-actor"

# --------------------------------------------------------------------------------------------------
# Contenders (run in the child process)


async def raw_aiohttp(params: Mapping[str, Any]) -> list[str]:
    url = params["base_url"] + "/chat/completions"
    limit = asyncio.Semaphore(params["concurrency"])
    headers = {"content-type": "application/json", "authorization": "Bearer unused"}
    connector = aiohttp.TCPConnector(limit=params["concurrency"])
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(doc: str) -> str:
            async with limit, session.post(url, data=json.dumps(request_body(doc)), headers=headers) as r:
                r.raise_for_status()
                data = json.loads(await r.read())
            return str(data["choices"][0]["message"]["content"])

        return list(await asyncio.gather(*(one(doc) for doc in params["docs"])))


async def _openai_gather(params: Mapping[str, Any], http_client: Any) -> list[str]:
    limit = asyncio.Semaphore(params["concurrency"])
    client = openai.AsyncOpenAI(base_url=params["base_url"], api_key="unused", http_client=http_client)
    async with client:

        async def one(doc: str) -> str:
            async with limit:
                response = await client.chat.completions.create(**request_body(doc))
            return response.choices[0].message.content or ""

        return list(await asyncio.gather(*(one(doc) for doc in params["docs"])))


async def openai_default(params: Mapping[str, Any]) -> list[str]:
    return await _openai_gather(params, None)


async def openai_aiohttp(params: Mapping[str, Any]) -> list[str]:
    return await _openai_gather(params, openai.DefaultAioHttpClient())


def nimflow_inproc(params: Mapping[str, Any]) -> list[str]:
    result = nf_run(
        arxiv_shape.summarize_wf,
        use_cache=params.get("use_cache", False),
        servers={ACTOR: f"endpoint:{params['base_url']}"},
        n=params["n"],
    )
    return [summary.summary for summary in result.outputs]


def nimflow_gather(params: Mapping[str, Any]) -> list[str]:
    """The arXiv shape with asyncio.gather on nf.current_actor().client (as user code would)."""
    result = nf_run(
        arxiv_shape.gather_wf,
        use_cache=False,
        servers={ACTOR: f"endpoint:{params['base_url']}"},
        n=params["n"],
    )
    return [answer for batch in result.outputs for answer in batch]


def nimflow_extract(params: Mapping[str, Any]) -> list[str]:
    """`extract_many` per batch: JSON-schema completions parsed into a pydantic model."""
    result = nf_run(
        arxiv_shape.extract_wf,
        use_cache=False,
        servers={ACTOR: f"endpoint:{params['base_url']}"},
        n=params["n"],
    )
    answers = [answer for batch in result.outputs for answer in batch]
    failed = [a for a in answers if a.startswith("error: ")]
    if failed:
        raise RuntimeError(f"{len(failed)} extractions failed; first: {failed[0]}")
    # The fake server fills the schema from the prompt's sentences: check count, not content.
    return [f"Document {i} {a}" for i, a in enumerate(answers)]


CHILD: dict[str, Contender] = {
    "a": raw_aiohttp,
    "b": openai_default,
    "b'": openai_aiohttp,
    "c-inproc": nimflow_inproc,
    "c-gather": nimflow_gather,
    "c-extract": nimflow_extract,
}
LABELS = {
    "a": "(a) raw aiohttp",
    "b": "(b) AsyncOpenAI default",
    "b'": "(b') AsyncOpenAI aiohttp",
    "c-inproc": "(c) nimflow chat_many",
    "c-gather": "(c) nimflow gather",
    "c-extract": "(c) nimflow extract_many",
    "c-cli": "(c) nimflow CLI",
}

# --------------------------------------------------------------------------------------------------
# The parent: server, rounds, table


def cli_command(base_url: str, n: int, no_cache: bool = True) -> list[str]:
    command = [sys.executable, "-m", "nimflow", "run", str(PIPELINE.relative_to(ROOT)), "summarize_wf"]
    command += ["--server", f"{ACTOR}=endpoint:{base_url}", "--n", str(n)]
    return command + (["--no-cache"] if no_cache else [])


def last_outputs(home: str) -> list[str]:
    """The answers of the latest run recorded in this NIMFLOW_HOME (read straight from SQLite)."""
    with sqlite3.connect(Path(home) / "nimflow.db") as db:
        row = db.execute("SELECT outputs FROM run ORDER BY started_at DESC LIMIT 1").fetchone()
    return [summary["summary"] for summary in json.loads(row[0] or "[]")] if row else []


def measure_cli(base_url: str, n: int, home: str, no_cache: bool = True, name: str = "c-cli") -> Measurement:
    m = run_process(cli_command(base_url, n, no_cache), n, name, env={"NIMFLOW_HOME": home})
    if m.error is None:
        m.error = check_answers(last_outputs(home), n)
    return m


def measure(name: str, server: Any, n: int, concurrency: int) -> Measurement:
    params = {"n": n, "base_url": server.base_url, "concurrency": concurrency}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nimflow-bench-") as home, ServerProbe([server]) as probe:
        if name == "c-cli":
            m = measure_cli(server.base_url, n, home)
        else:
            m = run_child(SCRIPT, name, params, env={"NIMFLOW_HOME": home})
    m.server = probe.stats
    m.extra["load"] = load
    return m


# Goal rows: (contender, reference, measure, target); measure "rate" is the ratio of median
# items/s (higher is better), "cpu" the ratio of median CPU per item (lower is better).
GOALS = [
    ("c-gather", "b'", "rate", ">= 1.00"),
    ("c-gather", "b'", "cpu", "<= 1.05"),
    ("c-inproc", "a", "rate", ">= 0.40"),
    ("c-extract", "a", "rate", "report"),
    ("c-inproc", "b'", "rate", "report"),
    ("c-extract", "b'", "rate", "report"),
]


def goals(results: Mapping[str, list[Measurement]]) -> str:
    """One line per goal whose two contenders were measured: the ratio next to its target."""

    def median(name: str, what: str) -> float:
        return statistics.median(m.rate if what == "rate" else m.cpu_us_per_item for m in results[name])

    rows = []
    for name, ref, what, target in GOALS:
        if not results.get(name) or not results.get(ref):
            continue
        ratio = median(name, what) / median(ref, what)
        bound = float(target.split()[1]) if target != "report" else None
        ok = (
            ""
            if bound is None
            else ("met" if (ratio >= bound if what == "rate" else ratio <= bound) else "missed")
        )
        label = "items/s" if what == "rate" else "CPU us/item"
        rows.append([f"{LABELS[name]} / {LABELS[ref]}", label, f"{ratio:.2f}", target, ok])
    loads = [m.extra.get("load", 0.0) for ms in results.values() for m in ms]
    note = f"load average (1 min) at the measurements: {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    return markdown(["goal", "of", "ratio", "target", ""], rows) + "\n" + note


def replay(server: Any, n: int) -> list[list[str]]:
    """First run with the cache on in a fresh home, then the fully cached second run."""
    rows = []
    params = {"n": n, "base_url": server.base_url, "concurrency": 256, "use_cache": True}
    for label in ("in-process", "CLI"):
        with tempfile.TemporaryDirectory(prefix="nimflow-bench-") as home:
            env = {"NIMFLOW_HOME": home}
            runs = []
            for _ in range(2):
                if label == "CLI":
                    runs.append(measure_cli(server.base_url, n, home, no_cache=False))
                else:
                    runs.append(run_child(SCRIPT, "c-inproc", params, env=env))
            first, second = runs
            for m in runs:
                if m.error:
                    print(f"  replay {label}: ERROR {m.error}")
            rows.append(
                [
                    f"(c) nimflow {label}",
                    f"{first.wall:.2f}",
                    f"{second.wall:.3f}",
                    f"{second.rate:,.0f}",
                    f"{second.wall / first.wall * 100:.1f} %",
                    f"{second.cpu_us_per_item:,.0f}",
                    "ok" if not (first.error or second.error) else (first.error or second.error or ""),
                ]
            )
            print(f"  replay {label}: first {first.wall:.2f} s, cached {second.wall:.3f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, action="append", help="repeatable; default 50 and 0")
    parser.add_argument("--server-cap", type=int, default=256, help="the fake server's requests in flight")
    parser.add_argument("--concurrency", type=int, default=256, help="the hand-written contenders' semaphore")
    parser.add_argument("--only", nargs="*", choices=list(LABELS), help="contenders to run")
    parser.add_argument("--no-replay", action="store_true", help="skip the cache replay measurement")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args, rest = parser.parse_known_args()
    if "--child" in rest:
        from harness import child_main

        child_main(CHILD, rest)
        return
    names = args.only or list(LABELS)
    print(f"# throughput: N={args.n}, {args.rounds} rounds, server cap {args.server_cap}; {machine()}")
    report: dict[str, Any] = {"machine": machine(), "n": args.n, "modes": {}}
    for latency in args.latency_ms or [50.0, 0.0]:
        ideal = args.server_cap / (latency / 1000) if latency else None
        print(
            f"\n## latency {latency:g} ms" + (f" (ideal {ideal:,.0f} items/s)" if ideal else ""), flush=True
        )
        with fake_servers(latency_ms=latency, max_concurrency=args.server_cap) as (server,):
            started = time.perf_counter()
            results = alternate(
                names, args.rounds, lambda name: measure(name, server, args.n, args.concurrency)
            )
            print(f"\n{goals(results)}")
            results = {LABELS[k]: v for k, v in results.items()}
            print(f"\n{table(results, LABELS['a'] if 'a' in names else None, ideal)}")
            print(f"({time.perf_counter() - started:.0f} s)", flush=True)
            report["modes"][f"{latency:g}ms"] = results
            if latency == (args.latency_ms or [50.0])[0] and not args.no_replay:
                print("\n## cache replay (cache on: a first run, then the same items fully cached)")
                rows = replay(server, args.n)
                header = [
                    "",
                    "first run s",
                    "cached run s",
                    "cached items/s",
                    "cached / first",
                    "cached CPU us/item",
                    "check",
                ]
                print(markdown(header, rows), flush=True)
                report["replay"] = rows
    if args.json:
        save(args.json, report)


if __name__ == "__main__":
    main()
