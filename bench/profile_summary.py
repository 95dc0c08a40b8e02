"""Summarise py-spy raw (collapsed) stacks: where the worker's CPU samples go.

    python bench/run.py --only w5b --measure 150000 --pyspy /tmp/prof   # records the worker
    python bench/profile_summary.py /tmp/prof/w5b-c200-w5b.txt [--top 25] [--thread conveyor-sqlite]
    python bench/profile_summary.py FILE --categories      # one job's time by kind of work

Prints, per thread and overall: samples, the top functions by *self* samples (the leaf frame)
and by *inclusive* samples (anywhere on the stack), as % of all samples. py-spy records only
frames that were running (not idle) unless it was started with --idle (then `EpollSelector.select`
is the loop waiting). ``--categories`` charges every sample to one kind of work, walking from
the leaf frame up to the first frame that names it (see CATEGORIES): the Redis client (redis-py
+ hiredis, socket writes included), decoding claimed jobs, the backend's other glue, the worker's
per-job dispatch (task creation, handler, outcome), the pump, the SQLite thread, or the bare
event loop (select, callbacks).
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


# (category, frame test). Walking from the leaf frame up, the first frame that matches a rule
# decides, the event loop's own frames excepted: they count only when nothing else is on the
# stack (so a socket write under redis-py counts as "client", create_task under Worker._spawn as
# "dispatch", and select/callback bookkeeping with no conveyor or redis frame as "event loop").
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("redis client: redis-py + hiredis (send, parse, pool)", re.compile(r"\((redis|hiredis)/")),
    (
        "decode claimed jobs: job_from_hash, pairs, Job()",
        re.compile(
            r"^(job_from_hash|_pairs|_f|(RedisBackend|Attempts)\._claimed\S*|pairs|row_to_job) "
        ),
    ),
    ("backend glue (outcomes -> JSON, held-job bookkeeping)", re.compile(r"\(conveyor/backends/")),
    (
        "worker: per-job dispatch (spawn task, handler, outcome, context)",
        re.compile(
            r"^(Worker\.(_spawn|_execute|_start_buffered|_finished\w*)|run_handler|outcome_for"
            r"\w*|Context\S*|_Running\S*) |\(conveyor/worker/(executor|context)\.py|\(bench/common"
        ),
    ),
    ("worker: pump, rounds, services", re.compile(r"\(conveyor/worker/")),
    ("conveyor, other", re.compile(r"\(conveyor/")),
]
LOOP = ("event loop: select, callbacks, scheduling", re.compile(r"\(asyncio/|\(selectors\.py"))


def categorize(frames: list[str]) -> str:
    for f in reversed(frames):
        for name, pat in CATEGORIES:
            if pat.search(f):
                return name
    if any(LOOP[1].search(f) for f in frames):
        return LOOP[0]
    return "other (interpreter start/stop, truncated stacks)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--thread", help="only this thread name (e.g. MainThread, conveyor-sqlite)")
    ap.add_argument(
        "--lines", action="store_true", help="keep line numbers (default: per function)"
    )
    ap.add_argument("--categories", action="store_true",
                    help="samples by kind of work (client, decode, dispatch, loop, ...)")  # fmt: skip
    args = ap.parse_args()
    key = short if args.lines else func_only
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    cats: Counter[str] = Counter()
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
        cats[categorize(frames)] += n
        for f in set(map(key, frames)):
            incl[f] += n
    print(f"{total} samples")
    for name, n in threads.most_common():
        print(f"  thread {name}: {n} ({n / total:.0%})")
    if args.categories:
        print("\nBy kind of work (leaf frame up to the first frame that names it):")
        for c, n in cats.most_common():
            print(f"  {n / total:6.1%}  {c}")
    print(f"\nTop {args.top} by self samples:")
    for f, n in self_c.most_common(args.top):
        print(f"  {n / total:6.1%}  {f}")
    print(f"\nTop {args.top} by inclusive samples:")
    for f, n in incl.most_common(args.top):
        print(f"  {n / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
