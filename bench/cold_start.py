"""Cold start: what a cached rerun and the read commands cost from a fresh interpreter.

    python bench/cold_start.py                 # N=2000, 3 rounds (about a minute on an idle machine)
    python bench/cold_start.py --rounds 5 --n 2000

Each round, in a fresh NIMFLOW_HOME, through `python -m nimflow` on a pseudo-terminal (as a user
sees it, live progress drawn), against the fake server in its own process at --latency-ms:

  first run      `nimflow run bench/arxiv_shape.py --server nim-actor=endpoint:URL` (cache on)
  cached rerun   the same command again: every item a cache hit
  runs           `nimflow runs`
  show           `nimflow show` (the latest run)

Wall clock and CPU (user + system, from wait4) of each process, medians over the rounds, with the
load average read before each round (the machine may be shared: CPU seconds are the steadier
figure). Goals: cached rerun <= 10 % of the first run's wall time; runs/show < 0.3 s of CPU.
Where the CPU of a command goes: `python -X importtime -m nimflow runs 2>&1 | sort -t'|' -k2 -n`.
The tree's modules are byte-compiled first, as an installed package's are (with
PYTHONDONTWRITEBYTECODE set, as on some shared machines, every start would compile them again).
On a loaded machine, instruction counts are steadier than CPU seconds:
`valgrind --tool=callgrind --callgrind-out-file=/tmp/cg python -m nimflow runs` ("summary:" line).
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, Measurement, check_answers, fake_servers, machine, markdown, run_process
from throughput import PIPELINE, cli_command, last_outputs

STEPS = ("first run", "cached rerun", "runs", "show")


def one_round(base_url: str, n: int) -> dict[str, Measurement]:
    with tempfile.TemporaryDirectory(prefix="nimflow-bench-") as home:
        env = {"NIMFLOW_HOME": home}
        run = cli_command(base_url, n, no_cache=False)
        nimflow = [sys.executable, "-m", "nimflow"]
        got: dict[str, Measurement] = {}
        for step, command, items in (
            ("first run", run, n),
            ("cached rerun", run, n),
            ("runs", [*nimflow, "runs"], 1),
            ("show", [*nimflow, "show"], 1),
        ):
            m = run_process(command, items, step, env=env)
            if m.error is None and items == n:
                m.error = check_answers(last_outputs(home), n)
            plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", m.extra.get("output", ""))
            if m.error is None and step == "cached rerun" and f"{n // 10 + 1} cache hits" not in plain:
                m.error = "the rerun was not fully cached"
            got[step] = m
        return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50)
    args = parser.parse_args()
    for folder in ("nimflow", "pipelines", "bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    print(f"# cold start: N={args.n}, {args.rounds} rounds, {PIPELINE.relative_to(ROOT)}; {machine()}")
    results: dict[str, list[Measurement]] = {step: [] for step in STEPS}
    loads = []
    with fake_servers(latency_ms=args.latency_ms, max_concurrency=256) as (server,):
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            loads.append(load)
            got = one_round(server.base_url, args.n)
            line = ", ".join(f"{s} {m.wall:.2f} s wall / {m.cpu:.2f} s CPU" for s, m in got.items())
            print(f"  round {r + 1}/{args.rounds} (load {load:.1f}): {line}", flush=True)
            for step, m in got.items():
                if m.error:
                    print(f"    {step}: ERROR {m.error}")
                results[step].append(m)

    def wall(step: str) -> float:
        return statistics.median(m.wall for m in results[step])

    def cpu(step: str) -> float:
        return statistics.median(m.cpu for m in results[step])

    ratio = wall("cached rerun") / wall("first run")
    rows = [
        ["first run", f"{wall('first run'):.2f}", f"{cpu('first run'):.2f}", "", "", ""],
        ["cached rerun", f"{wall('cached rerun'):.2f}", f"{cpu('cached rerun'):.2f}",
         f"{ratio * 100:.1f} % of the first run's wall", "<= 10 %", "met" if ratio <= 0.10 else "missed"],
        ["", "", "", f"{cpu('cached rerun') / cpu('first run') * 100:.1f} % of its CPU", "(busy machine)", ""],
        *(
            [step, f"{wall(step):.2f}", f"{cpu(step):.2f}", f"{cpu(step):.2f} s CPU", "< 0.3 s CPU",
             "met" if cpu(step) < 0.3 else "missed"]
            for step in ("runs", "show")
        ),
    ]  # fmt: skip
    print(
        f"\nmedians of {args.rounds} rounds; load average (1 min) before the rounds: "
        + ", ".join(f"{load:.1f}" for load in loads)
    )
    print(markdown(["step", "wall s", "CPU s", "measured", "goal", ""], rows))


if __name__ == "__main__":
    main()
