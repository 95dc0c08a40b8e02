"""The chaos worker app (``conveyor worker --app bench.chaos.app:app``): handlers that sleep and
append execution records (`records`) to ``$CHAOS_DIR/exec-<pid>.jsonl``.

Settings come from the environment the harness sets: ``CONVEYOR_URL``, ``CHAOS_DIR``,
``CHAOS_LEASE`` (seconds), ``CHAOS_MAX_STALLS`` (the poison's), ``CHAOS_WORK_MAX_STALLS``, ``CHAOS_SKEW`` (seconds this process's clock
was moved on purpose; subtracted from every time it records) and ``CHAOS_CLAIM_SKEW`` (the same
for the backend's claim time, which is this process's clock on SQLite and Redis's on Redis).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from conveyor import Context, Conveyor

from .records import RecordFile

QUEUE = "chaos"
LEASE = float(os.environ.get("CHAOS_LEASE", "2.0"))
MAX_STALLS = int(os.environ.get("CHAOS_MAX_STALLS", "3"))
WORK_MAX_STALLS = int(os.environ.get("CHAOS_WORK_MAX_STALLS", "20"))
SKEW = float(os.environ.get("CHAOS_SKEW", "0"))
CLAIM_SKEW = float(os.environ.get("CHAOS_CLAIM_SKEW", "0"))

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///chaos-unused.db"))
_out: RecordFile | None = None


def _record(kind: str, ctx: Context, **extra: object) -> None:
    global _out
    if _out is None:
        _out = RecordFile(os.path.join(os.environ["CHAOS_DIR"], f"exec-{os.getpid()}.jsonl"))
    job = ctx.job
    _out.write(
        {"k": kind, "job": job.id, "tok": job.token, "pid": os.getpid(), "t": time.time() - SKEW}
        | extra
    )


def _start(ctx: Context) -> None:
    claimed = (ctx.job.started_at or time.time()) - CLAIM_SKEW
    _record("start", ctx, att=ctx.job.attempt, c=claimed)


@app.task(queue=QUEUE, lease=LEASE, max_stalls=WORK_MAX_STALLS, retries=3)
async def work(ctx: Context, ms: int, b: str | None = None, i: int = 0) -> None:
    """Sleep ``ms`` milliseconds between a start and a finish record (``b``/``i``: the batch
    label and position of an ``enqueue_many`` item, kept for the all-or-none check)."""
    _start(ctx)
    try:
        await asyncio.sleep(ms / 1000)
    except asyncio.CancelledError:
        _record("abort", ctx)
        raise
    _record("finish", ctx)


@app.task(queue=QUEUE, lease=LEASE, max_stalls=MAX_STALLS, retries=3)
async def poison(ctx: Context) -> None:
    """Kill this worker process, every time. It records its own death first: the harness only
    notices it later (`Pool.reap`), and the checker excuses a finished but unacknowledged run
    only within ``ack_slack`` of the death."""
    _start(ctx)
    assert _out is not None
    _out.write({"k": "kill", "pid": os.getpid(), "t": time.time() - SKEW})
    os.kill(os.getpid(), signal.SIGKILL)
