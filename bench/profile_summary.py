"""Summarize a py-spy profile as CPU microseconds per item, by function.

    py-spy record --threads -r 500 -f raw -o prof.raw -- python bench/engine_overhead.py --child sync-off
    python bench/profile_summary.py prof.raw --items 100000 --rate 500 [--match nimflow/] [--top 30]

py-spy samples every thread `rate` times a second while it runs Python code (idle threads are left
out), so a function seen in k samples cost about k / rate seconds: divided by the items, the cost
per item. Inclusive time counts a function with everything it calls; self time only its own lines.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def frame_key(frame: str) -> str:
    """`func (path/file.py)` without the line number, so a function's lines add up."""
    match = _FRAME.match(frame)
    return f"{match['name']} ({match['file']})" if match else frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's --rate")
    parser.add_argument("--match", default="", help="only functions whose frame contains this")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in args.raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread ") or frames[0].startswith("process "):
            threads[frames[0]] += count
            frames = frames[1:]
            if frames and frames[0].startswith("thread "):
                threads[frames[0]] += 0
                frames = frames[1:]
        total += count
        keys = [frame_key(f) for f in frames]
        for key in set(keys):
            inclusive[key] += count
        if keys:
            own[keys[-1]] += count
    per_item = 1e6 / args.rate / args.items
    print(f"{total} samples = {total / args.rate:.2f} s CPU = {total * per_item:.1f} us/item\n")
    if threads:
        print("by thread:")
        for name, count in threads.most_common():
            if count:
                print(f"  {count * per_item:8.1f} us/item  {name}")
        print()
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"{title} (us/item):")
        shown = 0
        for key, count in counter.most_common():
            if args.match and args.match not in key:
                continue
            print(f"  {count * per_item:8.1f}  {key}")
            shown += 1
            if shown >= args.top:
                break
        print()


if __name__ == "__main__":
    main()
