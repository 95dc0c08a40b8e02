"""redis-server's cost per no-op job of the worker's path (claim + acknowledgement + their
events), without a worker process: direct backend calls in rounds as the worker makes them
(``finish_and_claim`` of the previous round's completions and a claim of ``--batch``).

    python bench/redis_cost.py --url redis://127.0.0.1:6400/0 [--n 40000] [--batch 232] [--repeat 3]

Reports redis-server's CPU per job (user + sys from /proc; the server must run on this machine)
and ``INFO commandstats`` per job of the last repetition. The server is FLUSHALLed: use one of
your own, never a shared one. Deterministic counts (immune to a noisy machine): run the server
under ``valgrind --tool=callgrind`` and bracket the timed part with ``callgrind_control -z`` /
``-d`` (``--pause FILE`` waits for FILE to exist before the timed part and writes FILE.done
after it); see README "Redis: work per job".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import proc_cpu
from conveyor import Conveyor
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind


async def one(url: str, n: int, batch: int, pause: str) -> tuple[float, float, dict, int]:
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushall()
    pid = int(r.info("server")["process_id"])
    app = Conveyor(url)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    await app.open()
    for i in range(0, n, 500):  # small calls: a server under valgrind is ~50x slower
        await app.enqueue_many([("noop", None)] * min(500, n - i))
    b = app.backend
    params = ClaimParams(["default"], batch, "w")
    jobs = (await b.claim_jobs(params)).jobs  # scripts loaded, first round claimed
    if pause:
        Path(pause + ".ready").write_text("1")
        while not os.path.exists(pause):
            time.sleep(0.01)
    r.config_resetstat()
    c0, t0, done = proc_cpu(pid), time.perf_counter(), 0
    while jobs:
        outcomes = [Outcome(j.id, j.token, OutcomeKind.COMPLETED) for j in jobs]
        _, res = await b.finish_and_claim("w", outcomes, params)
        done += len(outcomes)
        jobs = res.jobs
    cpu, wall = proc_cpu(pid) - c0, time.perf_counter() - t0
    stats = r.info("commandstats")
    if pause:
        Path(pause + ".done").write_text(str(done))
    await app.close()
    r.close()
    return cpu / done * 1e6, done / wall, stats, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=232, help="claim size (W2: 200 + prefetch 32)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pause", default="", help="wait for this file before the timed part")
    args = ap.parse_args()
    runs = [asyncio.run(one(args.url, args.n, args.batch, args.pause)) for _ in range(args.repeat)]
    cpus = sorted(x[0] for x in runs)
    print(f"redis-server CPU per job: median {cpus[len(cpus) // 2]:.1f} us "
          f"(runs {', '.join(f'{c:.1f}' for c in cpus)}); jobs/s "
          f"{', '.join(f'{x[1]:,.0f}' for x in runs)}")  # fmt: skip
    stats, done = runs[-1][2], runs[-1][3]
    for name, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
        if v["usec"] / done >= 0.01:
            print(f"  {name.removeprefix('cmdstat_'):16s} calls/job {v['calls'] / done:7.3f}  "
                  f"usec/job {v['usec'] / done:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
