"""The PostgreSQL bloat check: rounds of N no-op jobs enqueued and drained by an embedded worker
on the bench's own cluster (default settings, `targets.PostgresTarget`), with retention deleting
each round's completed jobs; after every round the jobs table's size, live and dead tuples and
autovacuum runs. Bounded bloat: the size stops growing after the first rounds (space freed by
retention and vacuum is reused).

    .venv/bin/python -m bench.pg_bloat --jobs 100000 --rounds 3 [--pause 70]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from conveyor import Conveyor, Retention

from .targets import PostgresTarget, postgres_table_stats


async def _round(app: Conveyor, n: int, chunk: int) -> dict[str, float]:
    t0 = time.monotonic()
    for i in range(0, n, chunk):
        await app.enqueue_many([("noop", {}) for _ in range(min(chunk, n - i))])
    enq = time.monotonic() - t0
    t1 = time.monotonic()
    async with app.worker(concurrency=200):
        while (await app.stats(["default"]))["default"].counts["completed"] < n:
            await asyncio.sleep(0.2)
    drain = time.monotonic() - t1
    # Retention: this round's completed jobs go (in chunks of 5,000 rows per statement).
    await app.backend.apply_retention("default", Retention(completed_max_age=0))
    return {"enqueue_s": round(enq, 2), "drain_s": round(drain, 2),
            "drain_jobs_per_s": round(n / drain)}  # fmt: skip


async def main(jobs: int, rounds: int, chunk: int, pause: float) -> None:
    target = PostgresTarget()
    try:
        url = target.fresh(Path(tempfile.mkdtemp()), "bloat")
        app = Conveyor(url)

        @app.task
        async def noop() -> None: ...

        await app.open()
        print(json.dumps({"round": 0, **postgres_table_stats(url)}), flush=True)
        for r in range(1, rounds + 1):
            figures = await _round(app, jobs, chunk)
            await asyncio.sleep(pause)  # autovacuum wakes every 60 s (autovacuum_naptime)
            print(json.dumps({"round": r, "jobs": jobs, **figures, **postgres_table_stats(url)}),
                  flush=True)  # fmt: skip
        await app.close()
    finally:
        target.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument(
        "--pause",
        type=float,
        default=2.0,
        help="seconds after each round before measuring (70: autovacuum gets a turn)",
    )
    a = ap.parse_args()
    asyncio.run(main(a.jobs, a.rounds, a.chunk, a.pause))
