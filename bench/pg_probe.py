"""PostgreSQL probes behind the numbers in bench/README.md ("PostgreSQL, afternoon sitting"), on
the bench's own cluster (`targets.PostgresTarget`, PostgreSQL defaults):

    # the bench driver's W1 / W2 on a schema changed after migration (an index dropped...)
    .venv/bin/python -m bench.pg_probe variants --workloads w1,w2 --variants base,no_batch_index --reps 2
    # an embedded drain timed with the cluster's CPU, optionally after ANALYZE / CHECKPOINT
    .venv/bin/python -m bench.pg_probe drain --jobs 20000 --analyze --checkpoint --reps 2
    # bulk enqueue: jobs/s, producer and cluster CPU, WAL bytes per job
    .venv/bin/python -m bench.pg_probe enqueue --jobs 60000 --reps 3
    # the machine's floor for W4: the least a pickup can be (raw psycopg, no conveyor)
    .venv/bin/python -m bench.pg_probe floor --reps 3

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


async def _enqueue(url: str, n: int, pg_pid: int) -> dict:
    """W1's path measured from inside: ``enqueue_many`` of 1,000 no-op jobs at a time."""
    import psycopg

    app = make_app(url)
    await app.open()
    await app.enqueue_many([("noop", None)] * 1000)  # warm: connections, prepared statements
    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as c:
        c.execute("CHECKPOINT")
        lsn0 = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        t0, cpu0, db0 = time.perf_counter(), time.process_time(), _cluster_cpu(pg_pid)
        for i in range(0, n, 1000):
            await app.enqueue_many([("noop", None)] * min(1000, n - i))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        db = _cluster_cpu(pg_pid) - db0
        wal = c.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (str(lsn0),)).fetchone()[0]
    await app.close()
    return {"jobs_per_s": round(n / wall), "producer_cpu_us_per_job": round(cpu / n * 1e6, 1),
            "db_cpu_us_per_job": round(db / n * 1e6, 1), "wal_bytes_per_job": round(wal / n)}  # fmt: skip


def enqueue(args: argparse.Namespace, target: PostgresTarget, tmp: Path) -> None:
    for rep in range(args.reps):
        url = target.fresh(tmp, f"enqueue_{rep}")
        r = asyncio.run(_enqueue(url, args.jobs, target.pid))
        print(json.dumps({"rep": rep, "probe": "enqueue", **r}), flush=True)
        target.drop(url)


def drain(args: argparse.Namespace, target: PostgresTarget, tmp: Path) -> None:
    for rep in range(args.reps):
        url = target.fresh(tmp, f"drain_{rep}")
        r = asyncio.run(_drain(url, args.jobs, target.pid, args.analyze, args.checkpoint))
        print(json.dumps({"rep": rep, "analyze": args.analyze, "checkpoint": args.checkpoint,
                          **r}), flush=True)  # fmt: skip
        target.drop(url)


_FLOOR_TABLE = "CREATE TABLE floor (id bigserial PRIMARY KEY, status int NOT NULL, t0 float8)"
_FLOOR_CLAIM = ("UPDATE floor SET status = 1 WHERE id IN (SELECT id FROM floor WHERE status = 0 "
                "ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING t0")  # fmt: skip


async def _floor_listener(dsn: str, out: str) -> None:
    """The least a worker does: LISTEN, and on each notification one claiming UPDATE (its own
    connection, autocommit, synchronous commit) whose rows' enqueue times it records."""
    import psycopg

    with open(out, "a", buffering=1) as f:
        listen = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        work = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await listen.execute("LISTEN floor")
        f.write("ready\n")
        async for _ in listen.notifies():
            cur = await work.execute(_FLOOR_CLAIM, prepare=True)
            for (t0,) in await cur.fetchall():
                f.write(f"{time.time() - t0}\n")


async def _floor(dsn: str, tmp: Path, n: int) -> dict:
    """W4's pickup with nothing of conveyor's: a producer's one autocommit statement (insert
    and notify, one round trip, synchronous commit) to the start of a listener process's
    handling, 20 ms apart after 5 warm-ups, on the same cluster and settings."""
    import psycopg

    out = tmp / "floor.txt"
    out.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "bench.pg_probe", "floor-listener", dsn,
                             str(out)], cwd=ROOT)  # fmt: skip
    try:
        deadline = time.perf_counter() + 30
        while "ready" not in out.read_text():
            if time.perf_counter() > deadline:
                raise RuntimeError("floor listener did not start")
            await asyncio.sleep(0.01)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
            for _ in range(5 + n):
                await c.execute("WITH i AS (INSERT INTO floor (status, t0) VALUES (0, %s)) "
                                "SELECT pg_notify('floor', '')", (time.time(),), prepare=True)  # fmt: skip
                await asyncio.sleep(0.02)
            deadline = time.perf_counter() + 10
            while len(out.read_text().split()) < 6 + n and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait()
    vals = sorted(float(x) * 1000 for x in out.read_text().split()[6:])
    pick = lambda q: round(vals[min(len(vals) - 1, int(q * len(vals)))], 2)  # noqa: E731
    return {"n": len(vals), "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "max_ms": round(vals[-1], 2)}  # fmt: skip


def floor(args: argparse.Namespace, target: PostgresTarget, tmp: Path) -> None:
    import psycopg

    for rep in range(args.reps):
        with psycopg.connect(target._dsn(), autocommit=True) as c:
            c.execute("DROP TABLE IF EXISTS floor")
            c.execute(_FLOOR_TABLE)
        r = asyncio.run(_floor(target._dsn(), tmp, args.n))
        print(json.dumps({"rep": rep, "probe": "floor", **r}), flush=True)
        with psycopg.connect(target._dsn(), autocommit=True) as c:
            c.execute("DROP TABLE floor")


def main() -> None:
    if sys.argv[1:2] == ["floor-listener"]:  # the listener process of `floor`
        asyncio.run(_floor_listener(sys.argv[2], sys.argv[3]))
        return
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
    e = sub.add_parser("enqueue")
    e.add_argument("--jobs", type=int, default=60_000)
    e.add_argument("--reps", type=int, default=1)
    f = sub.add_parser("floor")
    f.add_argument("--n", type=int, default=200)
    f.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    target = PostgresTarget()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-pg-probe-"))
    try:
        target.fresh(tmp, "probe")  # starts the cluster
        probes = {"variants": variants, "drain": drain, "enqueue": enqueue, "floor": floor}
        probes[args.cmd](args, target, tmp)
    finally:
        target.close()


if __name__ == "__main__":
    main()
