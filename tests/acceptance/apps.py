"""The tasks the acceptance workers run, and the line log their handlers write.

`make_app` builds the same task registry in the worker processes (``worker_main``) and in the
test process (so enqueue validates payloads exactly as the workers expect). Handlers append one
short line per event to ``$ACCEPT_LOG``: ``<kind> <job id> <pid> <unix time>``. Each line is one
``write`` on an ``O_APPEND`` descriptor, so lines from concurrent processes never interleave.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

from conveyor import Context, Conveyor

_fd: int | None = None


def record(kind: str, subject: str) -> None:
    """Append ``<kind> <subject> <pid> <time>`` to ``$ACCEPT_LOG`` (no-op when unset)."""
    global _fd
    if _fd is None:
        path = os.environ.get("ACCEPT_LOG")
        if not path:
            return
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{kind} {subject} {os.getpid()} {time.time():.6f}\n".encode())


def _sleep_cap() -> float:
    # A restarted worker may finish long jobs quickly (keeps the suite short).
    return float(os.environ.get("ACCEPT_SLEEP_CAP", "inf"))


async def _sleep_logged(ctx: Context, seconds: float) -> None:
    record("start", ctx.job.id)
    try:
        await asyncio.sleep(min(seconds, _sleep_cap()))
    except asyncio.CancelledError:
        record("cancelled", ctx.job.id)
        raise
    record("end", ctx.job.id)


def make_app(url: str, tasks: Iterable[str] | None = None) -> Conveyor:
    """A `Conveyor` on ``url`` with the acceptance tasks (only those named in ``tasks``, if given:
    a worker's heartbeat interval follows the shortest lease among its registered tasks)."""
    app = Conveyor(url)
    wanted = None if tasks is None else set(tasks)

    def register(fn, **options):  # type: ignore[no-untyped-def]
        if wanted is None or fn.__name__ in wanted:
            app.task(**options)(fn)

    async def slow(ctx: Context, seconds: float) -> str:
        """Sleeps under a short lease: a killed worker's job is rescued within ~1 s."""
        await _sleep_logged(ctx, seconds)
        return "done"

    async def sleeper(ctx: Context, seconds: float) -> str:
        """Sleeps under the default 30 s lease: only a wake-up can tell it about a cancel fast."""
        await _sleep_logged(ctx, seconds)
        return "done"

    async def noop(ctx: Context) -> None:
        record("run", ctx.job.id)

    async def brief(ctx: Context, seconds: float) -> None:
        """Runs, then holds its slot a moment: one worker cannot drain a batch alone before
        another wakes up, even on a loaded machine."""
        record("run", ctx.job.id)
        await asyncio.sleep(seconds)

    async def churn(ctx: Context) -> None:
        record("start", ctx.job.id)
        record("end", ctx.job.id)

    register(slow, lease=1.0, retries=3)
    register(sleeper)
    register(noop)
    register(brief)
    register(churn, lease=2.0)
    return app
