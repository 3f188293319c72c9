"""Cooperating processes on one database: 1, 2 and 3 `nimflow run` processes of one cached map,
`--workers 1` vs `--workers 2`, and what claims cost per item; SQLite and PostgreSQL side by side.

    python bench/cooperate.py                       # 2,000 items, both stores
    python bench/cooperate.py --n 1000 --stores sqlite

The fake server runs in its own process with enough capacity (--latency ms per request, no
queueing). Items/s are measured from the run rows (first start to last end), so interpreter start
is left out; per process: the items it computed over its own run's duration. Claims overhead per
item: the claim statement, the cache re-check and the release, chunk by chunk (256 keys), timed
on their own, divided by the items.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import create_engine, text  # noqa: E402

from nimflow._store import Store  # noqa: E402
from nimflow.testing import spawn  # noqa: E402

PIPELINE = """
import nimflow as nf

llm = nf.ActorEnvironment(
    name="llm", server=nf.OpenAIEndpoint("http://127.0.0.1:9/v1", model="base"), ttl_seconds=0
)

@llm.task(cache=True, cache_version="1")
async def answer(x: int) -> str:
    reply = await nf.current_actor().client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": f"item {x}. Say it."}], max_tokens=4
    )
    return reply.choices[0].message.content or ""

@nf.task
def numbers(n: int) -> list[int]:
    return list(range(n))

@nf.workflow
def big(n: int = 2000) -> list[str]:
    return nf.map_task(answer, concurrency=CONCURRENCY)(x=numbers(n=n))
"""


@contextmanager
def databases(stores: list[str], folder: Path) -> Iterator[dict[str, Callable[[], str]]]:
    """A factory of fresh database URLs per store."""
    factories: dict[str, Callable[[], str]] = {}
    server = None
    if "sqlite" in stores:
        counter = iter(range(10_000))
        factories["sqlite"] = lambda: f"sqlite:///{folder / f'db{next(counter)}.sqlite'}"
    if "postgresql" in stores:
        from store.pg import PostgresServer, find_bin_dir  # type: ignore[import-not-found]

        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("postgresql binaries not found: PostgreSQL left out")
        else:
            server = PostgresServer(bin_dir).start()
            factories["postgresql"] = server.new_database
    try:
        yield factories
    finally:
        if server is not None:
            server.stop()


def cooperate(url: str, pipeline: Path, base_url: str, n: int, procs: int, workers: int) -> dict[str, float]:
    Store.open(url).close()
    env = {**os.environ, "NIMFLOW_DB_URL": url}
    cmd = [sys.executable, "-m", "nimflow", "run", str(pipeline), "--n", str(n)]
    cmd += ["--server", f"llm=endpoint:{base_url}", "--workers", str(workers)]
    running = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(procs)
    ]
    for proc in running:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"a run failed: {err.decode()[-2000:]}")
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("select id, started_at, ended_at from run")).all()
        computed: dict[str, int] = dict(
            conn.execute(
                text(
                    "select run_id, count(*) from taskrun where item is not null and not cache_hit group by run_id"
                )
            ).all()
        )
    engine.dispose()
    span = max(r[2] for r in rows) - min(r[1] for r in rows)
    per_process = [computed.get(r[0], 0) / (r[2] - r[1]) for r in rows]
    return {
        "total": n / span,
        "per_process": sum(per_process) / len(per_process),
        "computed": sum(computed.values()),
    }


def claims_overhead(url: str, n: int, chunk: int = 256) -> float:
    """µs per item of claiming, re-checking the cache and releasing, in chunks as the runner does."""
    store = Store.open(url)
    keys = [f"bench-{time.time_ns()}-{i}" for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, chunk):
        part = keys[start : start + chunk]
        taken = store.claim(part, "bench", 30).held
        store.cached(list(taken))
    store.release_all("bench")
    seconds = time.perf_counter() - started
    store.close()
    return seconds / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=20.0, help="ms per request at the fake server")
    parser.add_argument("--concurrency", type=int, default=64, help="the map's concurrency per process")
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    stores = args.stores.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipeline = folder / "coop.py"
        pipeline.write_text(PIPELINE.replace("CONCURRENCY", str(args.concurrency)))
        os.environ["NIMFLOW_HOME"] = str(folder / "home")
        fake = spawn(model="base", latency_ms=args.latency, log_limit=10)
        try:
            with databases(stores, folder) as factories:
                print(
                    f"{args.n} items, fake server {args.latency:g} ms/request, map concurrency {args.concurrency}"
                )
                print(
                    f"{'store':<11} {'setup':<22} {'total items/s':>14} {'per process':>12} {'computed':>9}"
                )
                for store, new_url in factories.items():
                    base: float | None = None
                    for procs, workers in ((1, 1), (2, 1), (3, 1), (1, 2)):
                        r = cooperate(
                            new_url(), pipeline, fake.base_url, args.n, procs, workers
                        )  # a fresh database: a cold cache
                        base = base or r["total"]
                        setup = (
                            f"{procs} process{'es' if procs > 1 else ''}"
                            if workers == 1
                            else f"--workers {workers}"
                        )
                        print(
                            f"{store:<11} {setup:<22} {r['total']:>10.0f} ({r['total'] / base:.2f}x) "
                            f"{r['per_process']:>9.0f} {int(r['computed']):>9}"
                        )
                    print(f"{store:<11} claims overhead: {claims_overhead(new_url(), args.n):.1f} µs/item")
        finally:
            fake.stop()


if __name__ == "__main__":
    main()
