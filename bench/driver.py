"""Run ONE workload on conveyor and print one ``RESULT {json}`` line.

Started by run.py as a fresh process, with a fresh store whose URL is in ``$BENCH_URL``:

    python -m bench.driver --workload w2 --n 20000 --concurrency 200

The driver is the producer and the monitor. For W2/W3/W5/idle (and W4) it starts ONE worker
process (``python -m bench.worker``, in its own session), polls conveyor's own counters through
a separate connection (O(1): SQLite's ``counts`` primary-key lookup, Redis ``ZCARD`` of the
completed set) every 5 ms (2 ms in W3), and stops the worker with SIGTERM (SIGKILL after 3 s).
W4-inproc runs the worker inside this process. ``mem`` enqueues without a worker and reports
the store's size per queued job.
Timing rules and fields follow ../shared/peers/python/README.md and ../shared/peers/sql.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from importlib import metadata
from pathlib import Path

from bench.common import LAT_FILE, QUEUE, URL, CpuWindow, make_app, pct, proc_cpu
from bench.procs import TMP, WorkerProc, scan_log
from bench.targets import (
    after_enqueue,
    command_stats,
    command_stats_diff,
    monitor_for,
    redis_client,
    redis_prefix,
    store_size,
)

POLL_FACTOR = 20.0  # as ../shared/peers: a poll waits >= 20x the last query
PRE_CHUNK = 20_000  # untimed pre-enqueue: enqueue_many per this many jobs


async def enqueue_bulk(app, task: str, n: int, chunk: int) -> None:
    items = [(task, None)] * chunk
    for i in range(0, n, chunk):
        await app.enqueue_many(items if i + chunk <= n else items[: n - i])


def store_baseline(url: str) -> int:
    """What `store_size` subtracts: Redis' used_memory of the empty server (its own ~1 MB);
    0 for SQLite (whose figure has always been the whole file, schema included)."""
    size = store_size(url)
    return size.get("redis_used_memory", 0)


# -- W1 ---------------------------------------------------------------------------------------------


async def w1(args, res: dict) -> None:
    app = make_app()
    await app.open()  # connection set-up is not timed
    chunk = args.chunk
    res["setting"] = f"app.enqueue_many() per {chunk:,} jobs ((task, None) tuples)"
    items = [("noop", None)] * chunk
    calls = [items if i + chunk <= args.n else items[: args.n - i] for i in range(0, args.n, chunk)]
    base = store_baseline(URL)
    cpu = CpuWindow(None)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for batch in calls:
        await app.enqueue_many(batch)
    dt = time.perf_counter() - t0
    c1 = time.process_time()
    cpu.end(res, args.n)
    res["producer_cpu_util"] = round((c1 - c0) / dt, 2)
    res["producer_cpu_us_per_job"] = round((c1 - c0) / args.n * 1e6, 1)
    res["seconds"] = round(dt, 3)
    res["jobs_per_s"] = round(args.n / dt, 1)
    st = await app.stats()
    q = st["default"].counts.get("queued", 0) if "default" in st else 0
    res["final_state"] = dict(st["default"].counts) if "default" in st else {}
    if q != args.n:
        res["note"] += f"conveyor reports {q} queued, expected {args.n}; "
        res["status"] = "error"
    await app.close()
    size = store_size(URL)
    res.update({k: v for k, v in size.items() if k != "store_bytes"})
    if size:
        res["store_bytes_per_job"] = round((size["store_bytes"] - base) / args.n, 1)


# -- drains: W2, W3, W5 ----------------------------------------------------------------------------


async def pre_enqueue(task: str, n: int, res: dict) -> None:
    """Untimed: n jobs with enqueue_many in big chunks, then checkpoint the WAL."""
    app = make_app()
    await app.open()
    t0 = time.perf_counter()
    await enqueue_bulk(app, task, n, PRE_CHUNK)
    await app.close()
    after_enqueue(URL)
    res["enqueue_s"] = round(time.perf_counter() - t0, 3)


async def drain(args, res: dict, task: str, concurrency: int, base_poll: float,
                measure: int | None) -> None:  # fmt: skip
    """Pre-enqueue n jobs, spawn ONE worker, poll the completed count.

    measure=None: until all n completed. measure=m: until m completions past the first
    observation (W5b)."""
    n = args.n
    base = store_baseline(URL)
    await pre_enqueue(task, n, res)
    size = store_size(URL)
    if "db_bytes" in size:
        res["queued_db_bytes"] = size["db_bytes"]
    if "redis_used_memory" in size:
        res["queued_redis_used_memory"] = size["redis_used_memory"]
    if size:
        res["store_bytes_per_queued_job"] = round((size["store_bytes"] - base) / n, 1)
    mon = monitor_for(URL)
    counts = mon.counts()
    if counts.get("queued") != n:
        res["note"] += f"after enqueue conveyor reports {counts}, expected {n} queued; "
    res["setting"] = f"python -m bench.worker --concurrency {concurrency} (one process)"
    if os.environ.get("BENCH_PROMETHEUS"):
        res["setting"] += " + PrometheusHook"
    cmd0 = command_stats(URL)
    w = WorkerProc(concurrency, args.workload)
    deadline = w.t_spawn + args.timeout
    t_first = c_first = t_end = None
    target = n
    done = 0
    polls = 0
    busy = 0.0
    cpu = None
    try:
        while True:
            t0 = time.perf_counter()
            done = mon.completed()
            now = time.perf_counter()
            polls += 1
            busy += now - t0
            if done > 0 and t_first is None:
                t_first, c_first = now, done
                cpu = CpuWindow(w.pid)
                w.profile(args.workload)
                if measure is not None:
                    target = min(n, c_first + measure)
            if done >= target:
                t_end = now
                assert cpu is not None
                cpu.end(res, done - c_first)
                break
            if now > deadline:
                res["status"] = "timeout"
                res["note"] += f"timeout after {args.timeout:g}s with {done}/{target} completed; "
                return
            if not w.alive():
                res["status"] = "error"
                res["note"] += (
                    f"worker exited (rc={w.proc.returncode}) at {done}/{target}: {w.text()[-600:]!r}; "
                )
                return
            # Adaptive, as the peers' driver: the next poll waits max(base, POLL_FACTOR x the
            # last query), so the monitor stays a few percent of one core and does not take the
            # store server's CPU on a small machine (a PostgreSQL count takes ~1 ms: polled
            # every 5 ms it cost the server ~20 % of a core during the drain).
            await asyncio.sleep(max(base_poll, POLL_FACTOR * (now - t0)))
    finally:
        if measure is None and res.get("status") == "ok":
            await asyncio.sleep(0.3)  # let a late duplicate or error show up before checking
        w.stop()
        res["monitor_polls"] = polls
        res["monitor_query_ms"] = round(busy / max(polls, 1) * 1000, 3)
        scan_log(w, res)
        final = mon.counts()
        res["final_state"] = final
        mon.close()
        if cmd0 and final.get("completed"):
            # spawn -> stop, per completed job: which commands redis-server spent its time on
            res["redis_commands"] = command_stats_diff(cmd0, command_stats(URL), final["completed"])
    res["startup_s"] = round(t_first - w.t_spawn, 3)
    res["first_done"] = c_first
    steady_s = t_end - t_first
    counted = done - c_first
    res["steady_jobs_per_s"] = round(counted / steady_s, 1) if steady_s > 0 else None
    if steady_s <= 0:
        res["note"] += f"all {done} completed at the first observation: no steady rate; "
    if measure is None:
        total = t_end - w.t_spawn
        res["seconds_incl_startup"] = round(total, 3)
        res["seconds"] = round(total, 3)
        res["jobs_per_s"] = round(n / total, 1)
        bad = {k: v for k, v in final.items() if k != "completed" and v}
        if final.get("completed") != n or bad:
            res["note"] += f"final counts {final}, expected {n} completed and nothing else; "
            res["status"] = "error"
    else:
        res["seconds"] = round(steady_s, 3)
        res["jobs_per_s"] = res["steady_jobs_per_s"]
        res["measured_jobs"] = counted
        left = final.get("queued", 0) + final.get("completed", 0)
        if left != n or final.get("active") or final.get("failed"):
            res["note"] += f"final counts {final}: completed + queued should be {n}; "
            res["status"] = "error"


# -- W4 ---------------------------------------------------------------------------------------------


def lat_count() -> int:
    with open(LAT_FILE, "rb") as f:
        return f.read().count(b"\n")


async def latency_loop(app, args, res: dict, alive, cpu_pid: int | None, t_spawn: float,
                       on_warm=None) -> None:  # fmt: skip
    """5 warm-up jobs one after another, 0.5 s idle, then n enqueues 20 ms apart."""
    deadline = t_spawn + args.timeout
    for i in range(5):
        await app.enqueue("lat", {"enqueued_at": time.time()})
        while lat_count() < i + 1:
            if time.perf_counter() > deadline:
                res["status"] = "timeout"
                res["note"] += f"warm-up job {i + 1} never ran; "
                return
            if not alive():
                res["status"] = "error"
                res["note"] += "worker exited during warm-up; "
                return
            await asyncio.sleep(0.002)
        if i == 0:
            res["startup_s"] = round(time.perf_counter() - t_spawn, 3)
    if on_warm:
        on_warm()
    await asyncio.sleep(0.5)  # let the worker go idle
    Path(LAT_FILE).write_text("")
    cpu = CpuWindow(cpu_pid)
    c0 = time.process_time()
    for _ in range(args.n):
        await app.enqueue("lat", {"enqueued_at": time.time()})
        await asyncio.sleep(0.02)
    wait_until = time.perf_counter() + 10
    while lat_count() < args.n and time.perf_counter() < wait_until:
        await asyncio.sleep(0.01)
    cpu.end(res, args.n)
    if cpu_pid is None:  # in-process: this process is producer and worker
        res["process_cpu_us_per_job"] = round((time.process_time() - c0) / args.n * 1e6, 1)
    vals = sorted(float(x) * 1000.0 for x in Path(LAT_FILE).read_text().split())
    if len(vals) != args.n:
        res["note"] += f"{len(vals)} latency records for {args.n} jobs; "
        res["status"] = "error"
    if vals:
        res["p50_ms"] = round(pct(vals, 50), 2)
        res["p99_ms"] = round(pct(vals, 99), 2)
        res["max_ms"] = round(vals[-1], 2)
        res["mean_ms"] = round(sum(vals) / len(vals), 2)


async def w4(args, res: dict) -> None:
    Path(LAT_FILE).write_text("")
    app = make_app()
    await app.open()
    res["setting"] = (
        f"python -m bench.worker --concurrency {args.concurrency} (one process); "
        "producer app.enqueue() in the driver process"
    )
    w = WorkerProc(args.concurrency, args.workload)
    try:
        await latency_loop(app, args, res, w.alive, w.pid, w.t_spawn,
                           on_warm=lambda: w.profile(args.workload))  # fmt: skip
    finally:
        w.stop()
        scan_log(w, res)
        await app.close()


async def w4_inproc(args, res: dict) -> None:
    Path(LAT_FILE).write_text("")
    app = make_app()
    res["setting"] = (
        f"embedded: async with app.worker(concurrency={args.concurrency}) in the producer's "
        "process; app.enqueue()"
    )
    t0 = time.perf_counter()
    await app.open()
    async with app.worker(concurrency=args.concurrency):
        await latency_loop(app, args, res, lambda: True, None, t0)
    await app.close()


# -- idle ---------------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            out[k] = int(v.split()[0])
    return out


async def idle(args, res: dict) -> None:
    app = make_app()
    await app.open()  # schema in place, queue empty
    await app.close()
    ready = TMP / "worker-ready"
    ready.unlink(missing_ok=True)
    res["setting"] = f"python -m bench.worker --concurrency {args.concurrency}, empty queue"
    w = WorkerProc(args.concurrency, args.workload, ready=str(ready))
    try:
        while not ready.exists():
            if not w.alive() or time.perf_counter() - w.t_spawn > args.timeout:
                res["status"] = "error"
                res["note"] += f"worker did not start: {w.text()[-600:]!r}; "
                return
            await asyncio.sleep(0.01)
        res["startup_s"] = round(time.perf_counter() - w.t_spawn, 3)
        await asyncio.sleep(1.0)  # settle after start-up
        w.profile(args.workload)
        c0, t0 = proc_cpu(w.pid), time.perf_counter()
        cpu = CpuWindow(w.pid)
        await asyncio.sleep(args.idle_s)
        c1, t1 = proc_cpu(w.pid), time.perf_counter()
        cpu.end(res, 0)
        st = proc_status(w.pid)
        res["seconds"] = round(t1 - t0, 3)
        res["worker_cpu_util"] = round((c1 - c0) / (t1 - t0), 4)
        res["cpu_percent"] = round((c1 - c0) / (t1 - t0) * 100, 2)
        res["rss_mb"] = round(st["VmRSS"] / 1024, 1)
        res["rss_peak_mb"] = round(st["VmHWM"] / 1024, 1)
        res["threads"] = st["Threads"]
    finally:
        w.stop()
        scan_log(w, res)


# -- mem -----------------------------------------------------------------------------------------------


async def mem(args, res: dict) -> None:
    """The store's size per queued job: n no-op jobs enqueued with ``enqueue_many`` per --chunk
    (as in W1; every call is one batch), nothing runs. Redis: (used_memory after - before) / n
    from INFO memory, and what each kind of key costs (MEMORY USAGE). SQLite: the file's bytes
    per job after a WAL checkpoint."""
    app = make_app()
    await app.open()
    before = store_size(URL)
    res["setting"] = f"app.enqueue_many() per {args.chunk:,} jobs, nothing runs"
    t0 = time.perf_counter()
    await enqueue_bulk(app, "noop", args.n, args.chunk)
    res["enqueue_s"] = round(time.perf_counter() - t0, 3)
    res["enqueue_jobs_per_s"] = round(args.n / (time.perf_counter() - t0), 1)
    await app.close()
    after_enqueue(URL)
    after = store_size(URL)
    mon = monitor_for(URL)
    counts = mon.counts()
    mon.close()
    res["final_state"] = counts
    if counts.get("queued") != args.n:
        res["status"] = "error"
        res["note"] += f"conveyor reports {counts}, expected {args.n} queued; "
    per_job = (after["store_bytes"] - before.get("redis_used_memory", 0)) / args.n
    res["store_bytes_per_queued_job"] = round(per_job, 1)
    if "redis_used_memory" in after:
        res["redis_used_memory_before"] = before["redis_used_memory"]
        res["redis_used_memory_after"] = after["redis_used_memory"]
        res["redis_keys"] = after["redis_keys"]
        res["redis_bytes_per_queued_job"] = round(per_job, 1)
        res["redis_memory"] = redis_memory_breakdown(
            URL, args.n, after["store_bytes"] - before["store_bytes"]
        )
    else:
        res["db_bytes"] = after["store_bytes"]


def redis_memory_breakdown(url: str, n: int, delta: int) -> dict:
    """Which keys cost what: MEMORY USAGE (value + key name + dict entry, allocator sizes) of a
    sample of job hashes (x n), the ready set, the events stream, every batch set and the
    queue's small keys; `unaccounted` = used_memory delta - their sum (the main key table's
    bucket array, allocator rounding, client buffers)."""
    r = redis_client(url)
    p = f"{redis_prefix(url)}:{{{QUEUE}}}:"
    out: dict = {}

    def usage(key: str, samples: int = 0) -> int:
        return int(r.memory_usage(key, samples=samples) or 0)

    try:
        total = 0
        ready = p + "ready"
        k = min(200, n)
        idx = sorted(random.Random(1).sample(range(n), k))
        ids = [r.zrange(ready, i, i)[0] for i in idx]
        sizes = [usage(p + "j:" + i) for i in ids]
        job_mean = sum(sizes) / len(sizes)
        sample_key = p + "j:" + ids[0]
        out["job_hash"] = {
            "keys": n, "bytes": round(job_mean * n), "per_job": round(job_mean, 1),
            "sampled": k, "min": min(sizes), "max": max(sizes),
            "encoding": r.object("encoding", sample_key), "fields": r.hlen(sample_key),
            "key_len": len(sample_key), "example": r.hgetall(sample_key),
        }  # fmt: skip
        total += round(job_mean * n)
        for name, key, length in (
            ("ready_zset", ready, r.zcard),
            ("events_stream", p + "events", r.xlen),
        ):
            b = usage(key)
            out[name] = {"bytes": b, "per_job": round(b / n, 1), "len": length(key),
                         "encoding": r.object("encoding", key)}  # fmt: skip
            total += b
        batch_bytes = batch_keys = batch_members = 0
        enc = None
        for key in r.scan_iter(match=p + "b:*", count=1000):
            batch_bytes += usage(key)
            batch_keys += 1
            batch_members += r.scard(key)
            enc = enc or r.object("encoding", key)
        out["batch_sets"] = {"bytes": batch_bytes, "per_job": round(batch_bytes / n, 1),
                             "keys": batch_keys, "members": batch_members, "encoding": enc}  # fmt: skip
        total += batch_bytes
        small = 0
        names = []
        for key in r.scan_iter(count=1000):
            if key.startswith((p + "j:", p + "b:")) or key in (ready, p + "events"):
                continue
            small += usage(key)
            names.append(key)
        out["other_keys"] = {"bytes": small, "keys": sorted(names)}
        total += small
        out["unaccounted"] = {"bytes": delta - total, "per_job": round((delta - total) / n, 1)}
        stats = r.memory_stats()
        out["memory_stats"] = {k: stats.get(k) for k in (
            "dataset.bytes", "overhead.total", "keys.count", "keys.bytes-per-key",
            "allocator.allocated", "peak.allocated")}  # fmt: skip
        db0 = stats.get("db.0") or {}
        out["memory_stats"]["overhead.hashtable.main"] = db0.get("overhead.hashtable.main")
        info = r.info("memory")
        out["mem_fragmentation_ratio"] = info.get("mem_fragmentation_ratio")
        out["used_memory_rss"] = info.get("used_memory_rss")
    finally:
        r.close()
    return out


# -- main ---------------------------------------------------------------------------------------------


async def run(args) -> dict:
    res: dict = {
        "system": "conveyor",
        "version": metadata.version("conveyor"),
        "backend": URL.split(":", 1)[0],
        "workload": args.workload,
        "n": args.n,
        "seconds": None, "jobs_per_s": None, "p50_ms": None, "p99_ms": None,
        "setting": "", "note": "", "status": "ok",
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    wl = args.workload
    if wl == "w1":
        await w1(args, res)
    elif wl == "w2":
        await drain(args, res, "noop", args.concurrency, 0.005, None)
    elif wl == "w3":
        await drain(args, res, "sleep", args.io_concurrency, 0.002, None)
        if res["status"] == "ok":
            # first observed completion -> last completion, + the one 10 ms job that had to run
            # before the first completion could be seen
            busy = round(res["seconds_incl_startup"] - res["startup_s"] + 0.010, 3)
            res["seconds"] = busy
            res["ideal_s"] = round(args.n * 0.010 / args.io_concurrency, 3)
            res["ratio_to_ideal"] = round(busy / res["ideal_s"], 2)
            res["jobs_per_s"] = round(args.n / busy, 1)
    elif wl == "w5a":
        await drain(args, res, "noop", args.concurrency, 0.005, None)
        if res["status"] == "ok":
            res["jobs_per_s"] = res["steady_jobs_per_s"]  # compare steady rates only
    elif wl == "w5b":
        await drain(args, res, "noop", args.concurrency, 0.005, args.measure)
    elif wl == "w4":
        await w4(args, res)
    elif wl == "w4-inproc":
        await w4_inproc(args, res)
    elif wl == "idle":
        await idle(args, res)
    elif wl == "mem":
        await mem(args, res)
    elif wl == "lateness":
        from bench.lateness import lateness

        await lateness(args, res)
    else:
        raise SystemExit(f"unknown workload {wl}")
    res["note"] = res["note"].strip("; ")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True,
                    choices=["w1", "w2", "w3", "w4", "w4-inproc", "w5a", "w5b", "idle", "mem",
                             "lateness"])  # fmt: skip
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--measure", type=int, default=20000, help="W5b: completions to time")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--concurrency", type=int, default=200, help="W2/W4/W5/idle worker")
    ap.add_argument("--io-concurrency", type=int, default=50, help="W3 worker")
    ap.add_argument("--chunk", type=int, default=20000, help="W1 enqueue_many size")
    ap.add_argument("--idle-s", type=float, default=5.0)
    args = ap.parse_args()
    if not URL:
        raise SystemExit("BENCH_URL is not set (run.py sets it)")
    res = asyncio.run(run(args))
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
