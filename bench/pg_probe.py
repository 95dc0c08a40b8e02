"""PostgreSQL probes behind the numbers in bench/README.md ("PostgreSQL, afternoon sitting"), on
the bench's own cluster (`targets.PostgresTarget`, PostgreSQL defaults):

    # the bench driver's W1 / W2 on a schema changed after migration (an index dropped...)
    .venv/bin/python -m bench.pg_probe variants --workloads w1,w2 --variants base,no_batch_index --reps 2
    # an embedded drain timed with the cluster's CPU, optionally after ANALYZE / CHECKPOINT
    .venv/bin/python -m bench.pg_probe drain --jobs 20000 --analyze --checkpoint --reps 2

Variants are experiments, not configurations conveyor supports: they show what a part of the
schema costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import _cluster_cpu, make_app
from .targets import PostgresTarget

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "no_batch_index": ["DROP INDEX {s}.jobs_batch"],
    "no_event_indexes": ["DROP INDEX {s}.events_queue", "DROP INDEX {s}.events_job"],
    "no_finished_index": ["DROP INDEX {s}.jobs_finished"],
    "hash_events_job": [
        "DROP INDEX {s}.events_job",
        "CREATE INDEX events_job ON {s}.events USING hash (job_id)",
    ],
}


def _sql(target: PostgresTarget, statements: list[str]) -> None:
    import psycopg

    with psycopg.connect(target._dsn(), autocommit=True) as c:
        for statement in statements:
            c.execute(statement)


def variants(args: argparse.Namespace, target: PostgresTarget, tmp: Path) -> None:
    for rep in range(args.reps):
        for name in args.variants.split(","):
            for wl in args.workloads.split(","):
                url = target.fresh(tmp, f"{name}_{wl}")
                schema = url.rsplit("schema=", 1)[1]
                conveyor = str(Path(sys.executable).with_name("conveyor"))
                subprocess.run([conveyor, "--url", url, "migrate"], check=True,
                               capture_output=True)  # fmt: skip
                _sql(target, [ddl.format(s=schema) for ddl in VARIANTS[name]])
                env = {**os.environ, **target.env(), "BENCH_URL": url, "BENCH_TMP": str(tmp),
                       "BENCH_LAT_FILE": str(tmp / "latency.txt"), "PYTHONPATH": str(ROOT)}  # fmt: skip
                argv = [sys.executable, "-m", "bench.driver", "--workload", wl, "--n",
                        str(args.n), "--chunk", "1000", "--concurrency", "200"]  # fmt: skip
                out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
                rows = [
                    json.loads(x[7:]) for x in out.stdout.splitlines() if x.startswith("RESULT ")
                ]
                r = rows[0] if rows else {"status": "error", "note": out.stderr[-300:]}
                print(json.dumps({"rep": rep, "variant": name, "workload": wl,
                                  **{k: r.get(k) for k in ("status", "jobs_per_s",
                                     "steady_jobs_per_s", "db_cpu_us_per_job", "note")}}),
                      flush=True)  # fmt: skip
                target.drop(url)


async def _drain(url: str, n: int, pg_pid: int, analyze: bool, checkpoint: bool) -> dict:
    app = make_app(url)
    await app.open()
    for i in range(0, n, 1000):
        await app.enqueue_many([("noop", None)] * min(1000, n - i))
    schema = url.rsplit("schema=", 1)[1]
    conninfo = url.split("?", 1)[0]
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as c:
        if analyze:
            c.execute(f"ANALYZE {schema}.jobs")
        if checkpoint:
            c.execute("CHECKPOINT")
    t0, cpu0 = time.perf_counter(), time.process_time()
    db0 = _cluster_cpu(pg_pid)
    async with app.worker(concurrency=200):
        while (await app.stats(["default"]))["default"].counts.get("completed", 0) < n:
            await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    out = {"jobs_per_s": round(n / wall), "process_cpu_us_per_job":
           round((time.process_time() - cpu0) / n * 1e6, 1),
           "db_cpu_us_per_job": round((_cluster_cpu(pg_pid) - db0) / n * 1e6, 1)}  # fmt: skip
    await app.close()
    return out


def drain(args: argparse.Namespace, target: PostgresTarget, tmp: Path) -> None:
    for rep in range(args.reps):
        url = target.fresh(tmp, f"drain_{rep}")
        r = asyncio.run(_drain(url, args.jobs, target.pid, args.analyze, args.checkpoint))
        print(json.dumps({"rep": rep, "analyze": args.analyze, "checkpoint": args.checkpoint,
                          **r}), flush=True)  # fmt: skip
        target.drop(url)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("variants")
    v.add_argument("--workloads", default="w1,w2")
    v.add_argument("--variants", default=",".join(VARIANTS))
    v.add_argument("--n", type=int, default=20_000)
    v.add_argument("--reps", type=int, default=1)
    d = sub.add_parser("drain")
    d.add_argument("--jobs", type=int, default=20_000)
    d.add_argument("--analyze", action="store_true")
    d.add_argument("--checkpoint", action="store_true")
    d.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    target = PostgresTarget()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-pg-probe-"))
    try:
        target.fresh(tmp, "probe")  # starts the cluster
        (variants if args.cmd == "variants" else drain)(args, target, tmp)
    finally:
        target.close()


if __name__ == "__main__":
    main()
