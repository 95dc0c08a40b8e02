"""The app of the poison-job tests: ``poison`` kills its own worker process every time it runs;
``work`` is an innocent short job. Both record each start (job id, stalls seen on the claimed
job, pid) to ``PROC_LOG``."""

from __future__ import annotations

import asyncio
import os
import signal

from conveyor import Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
LOG = os.environ.get("PROC_LOG", os.devnull)


def record(kind: str, job_id: str, stalls: int) -> None:
    # One short O_APPEND write per line: atomic between processes, kept by a kill -9.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job_id} {stalls} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@app.task(lease=0.5, max_stalls=2, retries=0)
async def poison(ctx) -> None:  # type: ignore[no-untyped-def]
    record("poison", ctx.job.id, ctx.job.stalls)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(lease=0.5, max_stalls=2, retries=0)
async def work(ctx, ms: int) -> None:  # type: ignore[no-untyped-def]
    record("work", ctx.job.id, ctx.job.stalls)
    await asyncio.sleep(ms / 1000)
