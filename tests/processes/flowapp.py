"""Tasks under flow control, run by real worker processes in test_flow_processes.py."""

from __future__ import annotations

import asyncio
import os
import time

from conveyor import CircuitBreaker, Concurrency, Conveyor, RateLimit

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
LOG = os.environ.get("PROC_LOG", os.devnull)
FAIL_FLAG = os.environ.get("FAIL_FLAG", "/nonexistent")


def record(kind: str, job_id: str, extra: str = "-") -> None:
    # One short O_APPEND write per line: atomic between processes.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job_id} {time.time():.6f} {os.getpid()} {extra}\n".encode())
    finally:
        os.close(fd)


@app.task(rate_limit="20/s")
async def paced(ctx) -> None:
    record("start", ctx.job.id)


@app.task(rate_limit=RateLimit("5/s", key="provider"))
async def per_provider(ctx, provider: str) -> None:
    record("start", ctx.job.id, provider)


@app.task(rate_limit="2/s")
async def trickle(ctx) -> None:
    record("start", ctx.job.id, "trickle")


@app.task
async def free(ctx) -> None:
    record("start", ctx.job.id, "free")


@app.task(concurrency=3)
async def capped(ctx, seconds: float) -> None:
    record("start", ctx.job.id)
    await asyncio.sleep(seconds)
    record("end", ctx.job.id)


@app.task(concurrency=Concurrency(1), lease=1.0, max_stalls=0)  # a stall fails it: no re-run
async def exclusive(ctx, seconds: float) -> None:
    record("start", ctx.job.id)
    await asyncio.sleep(seconds)
    record("end", ctx.job.id)


@app.task(breaker=CircuitBreaker(failures=3, cooldown=1.0), retries=20, backoff_initial=0.05,
          backoff_max=0.2)  # fmt: skip
async def upstream(ctx) -> None:
    if os.path.exists(FAIL_FLAG):
        record("fail", ctx.job.id)
        raise RuntimeError("upstream is down")
    record("start", ctx.job.id)
