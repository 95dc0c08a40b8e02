"""Summarise py-spy raw (collapsed) stacks: where the worker's CPU samples go.

    python bench/run.py --only w5b --measure 150000 --pyspy /tmp/prof   # records the worker
    python bench/profile_summary.py /tmp/prof/w5b-c200-w5b.txt [--top 25] [--thread conveyor-sqlite]

Prints, per thread and overall: samples, the top functions by *self* samples (the leaf frame)
and by *inclusive* samples (anywhere on the stack), as % of all samples. py-spy records only
frames that were running (not idle) unless it was started with --idle.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<fn>.*?) \((?P<loc>[^()]*)\)$")


def short(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py:123)'."""
    m = FRAME.match(frame)
    if not m:
        return frame
    loc = m["loc"]
    path, _, line = loc.rpartition(":")
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if "conveyor" in parts else parts[-1]
    return f"{m['fn']} ({tail}:{line})"


def func_only(frame: str) -> str:
    """Drop the line number: aggregate a function over all its lines."""
    s = short(frame)
    return re.sub(r":\d+\)$", ")", s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--thread", help="only this thread name (e.g. MainThread, conveyor-sqlite)")
    ap.add_argument(
        "--lines", action="store_true", help="keep line numbers (default: per function)"
    )
    args = ap.parse_args()
    key = short if args.lines else func_only
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for raw in Path(args.file).read_text().splitlines():
        if not raw.strip():
            continue
        stack, _, count = raw.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        name = "?"
        if frames[0].startswith("thread ("):  # --threads: 'thread (TID): NAME' or 'thread (TID)'
            name = frames[0].partition(": ")[2] or frames[0]
            frames = frames[1:]
        if args.thread and name != args.thread:
            continue
        threads[name] += n
        total += n
        if frames:
            self_c[key(frames[-1])] += n
        for f in set(map(key, frames)):
            incl[f] += n
    print(f"{total} samples")
    for name, n in threads.most_common():
        print(f"  thread {name}: {n} ({n / total:.0%})")
    print(f"\nTop {args.top} by self samples:")
    for f, n in self_c.most_common(args.top):
        print(f"  {n / total:6.1%}  {f}")
    print(f"\nTop {args.top} by inclusive samples:")
    for f, n in incl.most_common(args.top):
        print(f"  {n / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
