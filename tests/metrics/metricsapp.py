"""The app of the metrics tests' worker processes: the backend from $CONVEYOR_URL."""

from __future__ import annotations

import os

from conveyor import Context, Conveyor, Permanent, Retry

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///metrics-test.db"))


@app.task(queue="m", retries=2)
async def ok(n: int) -> int:
    return n


@app.task(queue="m", retries=2)
async def boom() -> None:
    raise Permanent("failed on purpose")


@app.task(queue="m", retries=2)
async def flaky(ctx: Context) -> str:
    if ctx.attempt == 1:
        raise Retry(after=0.0, reason="first attempt fails on purpose")
    return "ok"
