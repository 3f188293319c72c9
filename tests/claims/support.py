"""A cached map of chat completions run by several `nimflow run` processes on one database, and
what the fake server's request log says about who computed what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text

from nimflow.testing import FakeServerProcess

CONCURRENCY = 32

PIPELINE = textwrap.dedent(
    f"""
    import nimflow as nf

    llm = nf.ActorEnvironment(
        name="llm", server=nf.OpenAIEndpoint("http://127.0.0.1:9/v1", model="base"), ttl_seconds=0
    )

    @llm.task(cache=True, cache_version="1")
    async def answer(x: int) -> str:
        reply = await nf.current_actor().client.chat.completions.create(
            model="base", messages=[{{"role": "user", "content": f"item {{x}}. Say it."}}], max_tokens=4
        )
        return f"{{x}}|{{len(reply.choices[0].message.content or '') > 0}}"

    @nf.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @nf.workflow
    def big(n: int = 2000) -> list[str]:
        return nf.map_task(answer, concurrency={CONCURRENCY})(x=numbers(n=n))
    """
)


def expected(n: int) -> list[str]:
    return [f"{x}|True" for x in range(n)]


def write_pipeline(folder: Path) -> Path:
    path = folder / "big.py"
    path.write_text(PIPELINE)
    return path


def command(pipeline: Path, fake: FakeServerProcess, n: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nimflow",
        "run",
        str(pipeline),
        "--n",
        str(n),
        "--server",
        f"llm=endpoint:{fake.base_url}",
        *extra,
    ]


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answered(fake: FakeServerProcess) -> Counter[int]:
    """How many times the server answered each item (200s only)."""
    return Counter(
        int(r.prompt.split()[1].rstrip("."))
        for r in fake.requests
        if r.path.endswith("/chat/completions") and r.status == 200
    )


def runs(url: str) -> list[tuple[str, str, list[str] | None]]:
    """(id, status, outputs) of every run, in start order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select id, status, outputs from run order by started_at")).all()
    finally:
        engine.dispose()
    return [(rid, status, json.loads(out) if out else None) for rid, status, out in rows]


def map_rows(url: str) -> list[tuple[str, int, bool, str | None, int | None]]:
    """(run_id, item, cache_hit, host, pid) of every map item row."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                (r[0], r[1], bool(r[2]), r[3], r[4])
                for r in conn.execute(
                    text("select run_id, item, cache_hit, host, pid from taskrun where item is not null")
                )
            ]
    finally:
        engine.dispose()


def nimflow(*args: str) -> str:
    """The output of a `nimflow` command, on a terminal wide enough for its tables."""
    env = {**os.environ, "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "nimflow", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def unfinished_claims(url: str, pid: int) -> int:
    """How many keys the run of process `pid` holds claims on and has not stored: its items in
    flight (a run keeps the claims of what it stored until its map ends)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = text(
                "select count(*) from claim c join run r on c.owner = r.id where r.pid = :pid "
                "and c.key not in (select key from cacheentry)"
            )
            return int(conn.execute(query, {"pid": pid}).scalar() or 0)
    finally:
        engine.dispose()


def node_counts(url: str) -> dict[str, tuple[int, int]]:
    """run id -> (waited, taken_over), summed over its node rows."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = text(
                "select run_id, sum(waited), sum(taken_over) from taskrun where item is null group by run_id"
            )
            return {r[0]: (r[1], r[2]) for r in conn.execute(query)}
    finally:
        engine.dispose()
