"""The fan-out / fan-in that worker processes run in tests/processes/test_fanin_processes.py.

``FANIN_STALL=park`` makes this process hang in every outbox forward (after recording
``forwarding``): killed there, a parent's park is stored but (on Redis) its children wait in
the outbox. ``FANIN_STALL=settle`` hangs in every forward once a child completed in this
process: killed there, a child's end is stored but (on Redis) its settle message waits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from conveyor import AwaitChildren, Context, Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
LOG = os.environ.get("PROC_LOG", os.devnull)
STALL = os.environ.get("FANIN_STALL", "")
CHILDREN = 6
_finished = False


def record(kind: str, job_id: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


if STALL:
    real_forward = app.backend.forward_handovers

    async def stalled(queues: Sequence[str]) -> int:
        if STALL == "settle" and not _finished:
            return await real_forward(queues)
        record("forwarding", ",".join(queues))
        await asyncio.Event().wait()  # until killed
        return 0

    app.backend.forward_handovers = stalled  # type: ignore[method-assign]


@app.task(queue="fan-p", lease=1.0, retries=0)
async def parent(ctx: Context, n: int) -> object:
    if not ctx.resumed:
        ctx.spawn_many([("child", {"i": i}) for i in range(n)])
        return AwaitChildren()
    record("resumed", ctx.job.id)
    return [c.result for c in ctx.children]


@app.task(queue="fan-c", lease=1.0)
async def child(i: int) -> int:
    global _finished
    await asyncio.sleep(0.01)
    _finished = True
    return i * i
