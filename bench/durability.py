"""Durability: commit lag of finished map items, and items lost per kill -9 of `nimflow run`.

A 2,000-item map, one chat completion per item, through `--server llm=endpoint:URL` to the fake
server in its own process. Two measurements, each `nimflow run` in a fresh NIMFLOW_HOME:

- lag: a run that is not killed, while this process polls the database every few ms; an item's
  commit lag is the time it was first seen committed minus the time its row was made
  (`cacheentry.created_at`, set when the item finished). Printed as p50 / p99 / max.
- kills: `kill -9` at several moments; an item is lost when the fake server answered it but the
  database does not hold it. The rerun must recompute exactly the lost-or-unanswered items.

    python bench/durability.py [--n 2000] [--latency-ms 20] [--kills 1.0 2.0 3.0 4.0 5.0]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nimflow.testing import FakeServerProcess, spawn  # noqa: E402

PIPELINE = """
import nimflow as nf

llm = nf.ActorEnvironment(
    name="llm", server=nf.OpenAIEndpoint("http://127.0.0.1:9/v1", model="base"), ttl_seconds=0
)


@llm.task(cache=True, cache_version="1")
async def answer(x: int) -> str:
    reply = await nf.current_actor().client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": f"item {x}. Say it."}], max_tokens=8
    )
    return f"{x}|{reply.choices[0].message.content}"


@nf.task
def numbers(n: int) -> list[int]:
    return list(range(n))


@nf.workflow
def big(n: int = 2000) -> list[str]:
    return nf.map_task(answer, concurrency=64)(x=numbers(n=n))
"""


def answered(fake: FakeServerProcess) -> set[int]:
    """Items the server sent a 200 for, from its own request log."""
    items = set()
    for record in fake.requests:
        if record.path.endswith("/chat/completions") and record.status == 200:
            items.add(int(record.prompt.split()[1].rstrip(".")))
    return items


def stored(db: Path) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {int(out.split("|")[0].strip('"')) for (out,) in conn.execute("select output from cacheentry")}
    finally:
        conn.close()


def command(pipeline: Path, fake: FakeServerProcess, n: int) -> list[str]:
    return [sys.executable, "-m", "nimflow", "run", str(pipeline), "--n", str(n),
            "--server", f"llm=endpoint:{fake.base_url}"]  # fmt: skip


def measure_lag(pipeline: Path, fake: FakeServerProcess, n: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="nimflow-durability-"))
    db = home / "nimflow.db"
    env = {**os.environ, "NIMFLOW_HOME": str(home)}
    started = time.time()
    proc = subprocess.Popen(command(pipeline, fake, n), env=env, stdout=subprocess.DEVNULL)
    lags: list[float] = []
    last_rowid = 0
    conn: sqlite3.Connection | None = None
    while True:
        running = proc.poll() is None
        if conn is None and db.exists():
            conn = sqlite3.connect(db, timeout=30)
        if conn is not None:
            try:
                rows = conn.execute(
                    "select rowid, created_at from cacheentry where rowid > ? order by rowid", (last_rowid,)
                ).fetchall()
            except sqlite3.OperationalError:  # the table is not there yet
                rows = []
            now = time.time()
            for rowid, created in rows:
                lags.append(now - created)
                last_rowid = rowid
        if not running:
            break
        time.sleep(0.005)
    if conn is not None:
        conn.close()
    elapsed = time.time() - started
    lags.sort()
    return {
        "items": len(lags),
        "seconds": elapsed,
        "p50_ms": 1000 * statistics.median(lags),
        "p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "max_ms": 1000 * lags[-1],
    }


def measure_kill(pipeline: Path, fake: FakeServerProcess, n: int, after: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="nimflow-durability-"))
    env = {**os.environ, "NIMFLOW_HOME": str(home)}
    fake.clear_log()
    proc = subprocess.Popen(command(pipeline, fake, n), env=env, stdout=subprocess.DEVNULL)
    # The clock starts at the first answer, so interpreter start-up does not count.
    deadline = time.monotonic() + 120
    while not fake.requests and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(after)
    proc.kill()
    proc.wait()
    done, kept = answered(fake), stored(home / "nimflow.db")
    fake.clear_log()
    rerun = subprocess.run(command(pipeline, fake, n), env=env, stdout=subprocess.DEVNULL, check=True)
    recomputed = answered(fake)
    return {
        "after_s": after,
        "answered": len(done),
        "stored": len(kept),
        "lost": len(done - kept),
        "rerun_exact": rerun.returncode == 0 and recomputed == set(range(n)) - kept,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--lag-rounds", type=int, default=3)
    parser.add_argument("--kills", type=float, nargs="*", default=[0.5, 1.0, 1.5, 2.0, 2.5])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "durability_pipeline.py"
        pipeline.write_text(PIPELINE)
        fake = spawn(model="base", latency_ms=args.latency_ms, log_limit=10 * args.n)
        try:
            print(f"n={args.n}, fake server latency {args.latency_ms:g} ms, map concurrency 64")
            for _ in range(args.lag_rounds):
                lag = measure_lag(pipeline, fake, args.n)
                print(
                    f"lag:  {lag['items']} items in {lag['seconds']:.1f} s; commit lag "
                    f"p50 {lag['p50_ms']:.0f} ms, p99 {lag['p99_ms']:.0f} ms, max {lag['max_ms']:.0f} ms"
                )
            for after in args.kills:
                kill = measure_kill(pipeline, fake, args.n, after)
                print(
                    f"kill: {kill['after_s']:.1f} s after the first answer: answered {kill['answered']}, "
                    f"stored {kill['stored']}, lost {kill['lost']}, rerun recomputed exactly the rest: "
                    f"{kill['rerun_exact']}"
                )
        finally:
            fake.stop()


if __name__ == "__main__":
    main()
