"""The chains that worker processes run in tests/processes/test_chain_processes.py.

``CHAIN_STALL_FORWARD=1`` makes this process hang in every hand-over forward (after recording
``forwarding``): a worker that stored a step's completion but is killed before it delivered the
next step (on Redis the next job then waits in the queue's outbox)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from conveyor import Conveyor, Next

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
LOG = os.environ.get("PROC_LOG", os.devnull)
STEPS = 3


def record(kind: str, job_id: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


if os.environ.get("CHAIN_STALL_FORWARD"):

    async def stalled(queues: Sequence[str]) -> int:
        record("forwarding", ",".join(queues))
        await asyncio.Event().wait()  # until killed
        return 0

    app.backend.forward_handovers = stalled  # type: ignore[method-assign]


@app.task(queue="chain-a", lease=1.0, steps=STEPS, step="first")
async def first(n: int) -> Next:
    await asyncio.sleep(0.01)
    return Next("second", {"n": n}, step="second")


@app.task(queue="chain-b", lease=1.0)
async def second(n: int) -> Next:
    await asyncio.sleep(0.01)
    return Next("third", {"n": n}, step="third", queue="chain-a")


@app.task(queue="chain-a", lease=1.0)
async def third(n: int) -> int:
    await asyncio.sleep(0.01)
    return n
