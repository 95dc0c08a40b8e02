"""The chaos producer process: ``python -m bench.chaos.producer --mode stream|batches ...``.

``stream``: enqueues ``--jobs`` jobs at ``--rate`` per second, one at a time or in small
``enqueue_many`` batches, with random run times (0-200 ms), priorities and some delays, and
appends an ``ack`` record after each call returned. A call that raised `BackendUnavailable` or
`OSError` was not acknowledged: the same items (same idempotency keys, so a call that did store
them before its reply was lost returns the stored jobs) are tried again until they are taken.

``batches``: ``enqueue_many`` of ``--batch-size`` jobs in a loop until killed, a ``begin`` record
before each call and the ``ack`` records after it (the SQLite all-or-none fault).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

from conveyor import BackendUnavailable

from .app import app, work
from .records import RecordFile

RETRY_PAUSE = 0.05


async def _until_taken(call: Any) -> Any:
    while True:
        try:
            return await call()
        except (BackendUnavailable, OSError):
            await asyncio.sleep(RETRY_PAUSE)


async def stream(args: argparse.Namespace, out: RecordFile) -> None:
    rnd = random.Random(args.seed)
    prios = [int(p) for p in args.priorities.split(",")]
    t0 = time.monotonic()
    n = 0
    while n < args.jobs:
        size = 1 if rnd.random() < 0.5 else min(rnd.randint(2, 20), args.jobs - n)
        items = []
        for k in range(n, n + size):
            delay = rnd.uniform(0.2, 1.5) if rnd.random() < args.delayed else 0.0
            items.append(
                {
                    "task": "work",
                    "payload": {"ms": rnd.randint(0, args.max_ms)},
                    "priority": rnd.choice(prios),
                    "delay": delay,
                    "idempotency_key": f"{args.seed}-{k}",
                }
            )
        called = time.time()
        if size == 1:
            it = items[0]
            job = await _until_taken(
                lambda it=it: work.enqueue_with(
                    it["payload"],
                    priority=it["priority"],
                    delay=it["delay"] or None,
                    idempotency_key=it["idempotency_key"],
                )
            )
            ids = [job.id]
        else:
            batch = await _until_taken(lambda items=items: app.enqueue_many(items))
            ids = batch.ids
        done = time.time()
        out.write_many(
            [
                {
                    "k": "ack",
                    "job": i,
                    "q": "chaos",
                    "p": it["priority"],
                    "due": called + it["delay"],
                    "t": done,
                }
                for i, it in zip(ids, items, strict=True)
            ]
        )
        n += size
        ahead = n / args.rate - (time.monotonic() - t0)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def batches(args: argparse.Namespace, out: RecordFile) -> None:
    rnd = random.Random(args.seed)
    k = 0
    while True:
        label = f"{os.getpid()}-{k}"
        items = [
            ("work", {"ms": rnd.randint(0, args.max_ms), "b": label, "i": i})
            for i in range(args.batch_size)
        ]
        out.write({"k": "begin", "b": label, "n": args.batch_size, "t": time.time()})
        called = time.time()
        batch = await _until_taken(lambda items=items: app.enqueue_many(items))
        done = time.time()
        out.write_many(
            [
                {"k": "ack", "job": i, "q": "chaos", "p": 5, "due": called, "t": done, "b": label}
                for i in batch.ids
            ]
        )
        k += 1


async def main(args: argparse.Namespace) -> None:
    out = RecordFile(os.path.join(args.dir, f"producer-{os.getpid()}.jsonl"))
    await _until_taken(app.open)  # the backend may be restarting right now
    async with app:
        await (stream if args.mode == "stream" else batches)(args, out)
    out.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos.producer")
    ap.add_argument("--mode", choices=("stream", "batches"), default="stream")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=500.0, help="jobs per second")
    ap.add_argument("--max-ms", type=int, default=200)
    ap.add_argument("--priorities", default="1,5,10")
    ap.add_argument("--delayed", type=float, default=0.1, help="fraction of delayed jobs")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
