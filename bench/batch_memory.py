"""Memory of `nimflow batch` on a long Batch file: peak RSS against the file's size.

    python bench/batch_memory.py --lines 20000 60000 200000

For each size: writes a file of chat requests, serves it with the fake server in its own process
(zero latency, log off), runs `nimflow batch` on it in a child process and reads that child's
peak resident memory (its own ru_maxrss, from wait4). The file is read as a stream, checked with
an on-disk index of custom_ids and answered chunk by chunk (10,000 lines a run), so the peak
should follow the chunk size, not the number of lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nimflow.testing import spawn


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, nargs="+", default=[20_000, 60_000, 200_000])
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    for lines in args.lines:
        measure(lines, args.concurrency)


def measure(lines: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder, spawn(log_limit=0) as server:
        source = Path(folder) / "in.jsonl"
        with source.open("w") as f:
            for i in range(lines):
                body = {
                    "model": "meta/llama3-8b-instruct",
                    "messages": [{"role": "user", "content": f"Line {i}. Short."}],
                }
                f.write(
                    json.dumps(
                        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                    )
                    + "\n"
                )
        env = {
            **os.environ,
            "NIMFLOW_HOME": str(Path(folder) / "home"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        started = time.monotonic()
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nimflow",
                "batch",
                str(source),
                "-o",
                str(Path(folder) / "out.jsonl"),
                "--server",
                f"endpoint:{server.base_url}",
                "--concurrency",
                str(concurrency),
                "--ttl",
                "0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"nimflow batch exited with {child.returncode}")
        seconds = time.monotonic() - started
        peak_mb = usage.ru_maxrss / 1024
        size_mb = source.stat().st_size / 1e6
        print(
            f"{lines:,} lines ({size_mb:.0f} MB): {seconds:.0f} s, {lines / seconds:,.0f} requests/s, "
            f"peak RSS of nimflow batch {peak_mb:.0f} MB"
        )


if __name__ == "__main__":
    main()
