"""The app worker processes run in these tests (``python -m conveyor worker ...procapp:app``)."""

from __future__ import annotations

import asyncio
import os

from conveyor import Conveyor

# Tests import this module for its task definitions too; workers get CONVEYOR_URL.
app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
LOG = os.environ.get("PROC_LOG", os.devnull)


def record(kind: str, job_id: str) -> None:
    # One short O_APPEND write per line: atomic between processes.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@app.task(lease=1.0, retries=3)
async def slow(ctx, seconds: float) -> str:
    record("start", ctx.job.id)
    await asyncio.sleep(seconds)
    record("end", ctx.job.id)
    return "done"


@app.task
async def quick(ctx, n: int) -> int:
    record("run", ctx.job.id)
    return n
