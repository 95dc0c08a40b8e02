"""Flow-control benchmarks: what a limited claim costs, and how exact the limiter is.

  F1 claim cost  N jobs are enqueued (not timed), then drained by direct backend calls in this
                 process: claim up to 100, acknowledge them, repeat. No handlers, no worker loop:
                 the figure is the backend's claim + ack cost per job (the part flow control
                 changes). Variants, each on a fresh store:
                   unlimited      no limit
                   rate 1 key     RateLimit(1,000,000/s, burst 1,000): a non-binding limit
                   rate 10k keys  the same limit keyed by a payload field with 10,000 values
                   conc 1 key     Concurrency(1,000,000)
                   conc 10k keys  the same cap keyed over 10,000 values
                 Target: 10k keys cost no more than 1.5x one key.
  F2 accuracy    three `conveyor worker` processes drain a task limited to R/s (default 200)
                 for S seconds (default 5). Reported: the most starts in any sliding second
                 (backend clock) over R (must be <= 1.00) and the achieved rate over R.

Usage: python bench/flow.py [--backend sqlite|redis] [--n 20000] [--rate 200] [--seconds 5]
Prints a table, and JSON lines appended to bench/results/<date>.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.targets import TARGETS  # noqa: E402
from conveyor import Concurrency, Conveyor, RateLimit  # noqa: E402
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "unlimited": {},
    "rate 1 key": {"rate_limit": RateLimit("1000000/s", burst=1000)},
    "rate 10k keys": {"rate_limit": RateLimit("1000000/s", burst=1000, key="k")},
    "conc 1 key": {"concurrency": Concurrency(1_000_000)},
    "conc 10k keys": {"concurrency": Concurrency(1_000_000, key="k")},
}
KEYS = 10_000
CLAIM = 100


async def claim_cost(url: str, variant: str, n: int) -> dict[str, Any]:
    app = Conveyor(url)

    @app.task(name="t", **VARIANTS[variant])
    async def t(k: str) -> None: ...

    try:
        await app.open()
        for start in range(0, n, 5000):
            await app.enqueue_many(
                [("t", {"k": f"k{i % KEYS}"}) for i in range(start, start + 5000)]
            )
        backend = app.backend
        params = ClaimParams(["default"], CLAIM, "bench")
        done = claims = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while done < n:
            res = await backend.claim_jobs(params)
            if not res.jobs:
                raise RuntimeError(f"{variant}: nothing claimable after {done} of {n}")
            claims += 1
            await backend.finish_jobs(
                "bench", [Outcome(j.id, j.token, OutcomeKind.COMPLETED) for j in res.jobs]
            )
            done += len(res.jobs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await app.close()
    return {"workload": "F1", "variant": variant, "n": n, "claims": claims,
            "us_per_job": wall / n * 1e6, "cpu_us_per_job": cpu / n * 1e6,
            "jobs_per_s": n / wall}  # fmt: skip


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, t + window - 1e-6) - i for i, t in enumerate(times)), default=0
    )


async def accuracy(url: str, rate: int, seconds: float, workers: int) -> dict[str, Any]:
    n = int(rate * seconds)
    os.environ["BENCH_RATE"] = str(rate)
    from bench import flowapp

    app = Conveyor(url)
    app.tasks.update({k: v for k, v in flowapp.make_app(url).tasks.items()})
    env = dict(os.environ, CONVEYOR_URL=url, BENCH_RATE=str(rate),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))  # fmt: skip
    argv = [sys.executable, "-m", "conveyor", "worker", "bench.flowapp:app", "--concurrency", "16"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, **quiet)
        for _ in range(workers)
    ]
    try:
        batch = await app.enqueue_many([("paced", {}) for _ in range(n)])
        await batch.wait(timeout=seconds * 4 + 30)
        starts: list[float] = []
        page = await app.list(limit=1000)
        while True:
            starts += [j.started_at for j in page.jobs if j.started_at is not None]
            if page.next_cursor is None:
                break
            page = await app.list(limit=1000, cursor=page.next_cursor)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait()
        await app.close()
    starts.sort()
    worst = max_in_window(starts)
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    return {"workload": "F2", "variant": f"{rate}/s x {workers} workers", "n": len(starts),
            "max_per_window": worst, "max_over_limit": worst / rate,
            "achieved_per_s": achieved, "achieved_over_limit": achieved / rate}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", default="sqlite", choices=sorted(TARGETS))
    ap.add_argument("--n", type=int, default=20_000, help="F1 jobs per variant")
    ap.add_argument("--rate", type=int, default=200, help="F2 limit, starts per second")
    ap.add_argument("--seconds", type=float, default=5.0, help="F2 budget length")
    ap.add_argument("--workers", type=int, default=3, help="F2 worker processes")
    ap.add_argument("--only", choices=["F1", "F2"])
    ap.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help="F1: only these variants (repeatable)",
    )
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    target = TARGETS[args.backend]()
    run_id = dt.datetime.now().isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-flow-bench-") as tmp:
        try:
            if args.only in (None, "F1"):
                for variant in args.variant or VARIANTS:
                    url = target.fresh(Path(tmp), variant.replace(" ", "-"))
                    rows.append(asyncio.run(claim_cost(url, variant, args.n)))
                    target.drop(url)
            if args.only in (None, "F2"):
                url = target.fresh(Path(tmp), "accuracy")
                rows.append(asyncio.run(accuracy(url, args.rate, args.seconds, args.workers)))
        finally:
            target.close()
    base = {r["variant"]: r for r in rows if r["workload"] == "F1"}
    print(f"\nflow control, backend {args.backend}, run {run_id}\n")
    if base:
        print(f"{'F1 claim+ack':16} {'µs/job':>8} {'cpu µs':>8} {'jobs/s':>9} {'x unlimited':>12}")
        for v, r in base.items():
            ratio = r["us_per_job"] / base["unlimited"]["us_per_job"]
            r["x_unlimited"] = ratio
            print(f"{v:16} {r['us_per_job']:8.1f} {r['cpu_us_per_job']:8.1f} "
                  f"{r['jobs_per_s']:9,.0f} {ratio:12.2f}")  # fmt: skip
        for kind in ("rate", "conc"):
            one, many = base.get(f"{kind} 1 key"), base.get(f"{kind} 10k keys")
            if one and many:
                ratio = many["us_per_job"] / one["us_per_job"]
                many["x_one_key"] = ratio
                verdict = "meets" if ratio <= 1.5 else "MISSES"
                print(f"  {kind}: 10k keys cost {ratio:.2f}x one key per job ({verdict} <= 1.5x)")
    for r in rows:
        if r["workload"] == "F2":
            print(f"\nF2 accuracy {r['variant']}: {r['n']} starts; most in any sliding second "
                  f"{r['max_per_window']} ({r['max_over_limit']:.2f}x the limit); achieved "
                  f"{r['achieved_per_s']:.1f}/s ({r['achieved_over_limit']:.1%} of the limit)")  # fmt: skip
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"{dt.date.today().isoformat()}.jsonl"
    with out.open("a") as f:
        for r in rows:
            line = {"bench": "flow", "run": run_id, "backend": args.backend, **r}
            print(json.dumps(line))
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
