"""What the driver, the worker process and run.py share: the bench app and its three jobs,
the W4 probe, percentiles and CPU accounting.

Every process gets its settings from environment variables set by run.py / the driver
(BENCH_URL, BENCH_LAT_FILE); nothing here knows an absolute path.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

from conveyor import Context, Conveyor, Retry

URL = os.environ.get("BENCH_URL", "")  # the backend URL of this workload (fresh per workload)
LAT_FILE = os.environ.get("BENCH_LAT_FILE", "")  # W4: one latency (seconds) per line; lateness
# records "<kind> <job id> <time>" lines
# The redis-server run.py started (--backend redis): its CPU is counted like the peers' driver.
REDIS_PID = int(os.environ.get("BENCH_REDIS_PID", "0") or 0) or None
PG_PID = int(os.environ.get("BENCH_PG_PID", "0") or 0) or None  # a PostgreSQL postmaster
QUEUE = "default"
_TCK = os.sysconf("SC_CLK_TCK")


def record_latency(enqueued_at: float) -> None:
    """Body of the W4 job: measure first, then append one line to a local file (no database
    write, so the probe neither loads the queue's database nor contends for its write lock)."""
    dt = time.time() - enqueued_at
    with open(LAT_FILE, "a") as f:
        f.write(repr(dt) + "\n")


def record_line(line: str) -> None:
    with open(LAT_FILE, "a") as f:
        f.write(line + "\n")


def make_app(url: str | None = None) -> Conveyor:
    """The bench app: its tasks on the ``default`` queue, with fixed names so that producer
    and worker processes agree."""
    app = Conveyor(url or URL)
    if os.environ.get("BENCH_OTEL"):  # tracing overhead (bench/tracing.py)
        from bench.tracing import hook

        app.add_hook(hook())

    @app.task(name="noop")
    async def noop() -> None:
        """W1, W2, W5: does nothing."""

    @app.task(name="sleep")
    async def sleep() -> None:
        """W3: an I/O wait of 10 ms."""
        await asyncio.sleep(0.010)

    @app.task(name="lat")
    async def lat(enqueued_at: float) -> None:
        """W4: pickup latency, measured first thing."""
        record_latency(enqueued_at)

    @app.task(name="due")
    async def due(ctx: Context) -> None:
        """lateness: a delayed job records when it started (its due time is the driver's)."""
        record_line(f"D {ctx.job.id} {time.time()!r}")

    @app.task(name="flaky", retries=1)
    async def flaky(ctx: Context, after: float) -> None:
        """lateness: fails once and asks to be retried ``after`` seconds later; records that
        due time (from the failure, as a user sees it), then when the retry started."""
        if ctx.job.attempt == 1:
            record_line(f"F {ctx.job.id} {time.time() + after!r}")
            raise Retry(after=after)
        record_line(f"R {ctx.job.id} {time.time()!r}")

    @app.task(name="busy")
    async def busy(seconds: float) -> None:
        """lateness: keeps a slot busy until just before another job is due."""
        await asyncio.sleep(seconds)

    return app


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile (as the peers)."""
    k = max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of one process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()  # fields from "state" on
    return (int(fields[11]) + int(fields[12])) / _TCK


def server_cpu() -> float:
    """CPU seconds of the store's server, 0 when there is none: redis-server, or a PostgreSQL
    cluster (the postmaster with its reaped children, plus its live backends)."""
    try:
        if REDIS_PID is not None:
            return proc_cpu(REDIS_PID)
        if PG_PID is not None:
            return _cluster_cpu(PG_PID)
    except (OSError, ValueError):
        pass
    return 0.0


def _cluster_cpu(postmaster: int) -> float:
    with open(f"/proc/{postmaster}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # exited meanwhile (its time went to the postmaster's cutime)
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[1]) == postmaster:  # ppid
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _TCK


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _TCK


class CpuWindow:
    """CPU used during a window by the worker process, the store's server (redis-server), this
    driver (monitor/producer), and everything else on the machine ("other": processes outside
    the benchmark)."""

    def __init__(self, worker_pid: int | None) -> None:
        self.pid = worker_pid
        self.t = time.perf_counter()
        self.w = proc_cpu(worker_pid) if worker_pid else 0.0
        self.r = server_cpu()
        self.d = time.process_time()
        self.m = machine_busy()

    def end(self, res: dict, jobs: int) -> None:
        wall = time.perf_counter() - self.t
        if wall <= 0:
            return
        w = (proc_cpu(self.pid) - self.w) if self.pid else 0.0
        r = server_cpu() - self.r
        d = time.process_time() - self.d
        other = machine_busy() - self.m - w - r - d
        if self.pid and jobs:
            res["worker_cpu_util"] = round(w / wall, 2)
            res["worker_cpu_us_per_job"] = round(w / jobs * 1e6, 1)
        if REDIS_PID is not None or PG_PID is not None:
            name = "redis" if REDIS_PID is not None else "db"
            if jobs:
                res[f"{name}_cpu_us_per_job"] = round(r / jobs * 1e6, 1)
            res[f"{name}_cpu_util"] = round(r / wall, 2)
        res["driver_cpu_util"] = round(d / wall, 2)
        if wall < 0.2:  # /proc counts in 10 ms ticks: too coarse to judge the machine's load
            return
        res["other_cpu_util"] = round(max(0.0, other) / wall, 2)
        if other / wall > 0.25:
            res["note"] += (
                f"noisy: processes outside the benchmark used {other / wall:.2f} cores "
                "during the measurement; "
            )
