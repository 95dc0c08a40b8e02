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


# quick under a 1 s lease: a claim whose reply a backend restart cut off is recovered in ~1 s
# (tests/backends/postgres/test_pg_processes.py).
@app.task(lease=1.0)
async def quick_leased(ctx, n: int) -> int:
    record("run", ctx.job.id)
    return n


# Batch callbacks (test_batch_processes.py): with PROC_DIE_AFTER_FINISH=1 the worker kills
# itself (SIGKILL) right after the backend committed the finish of a member run with die=True:
# before anything else of the worker runs (on Redis, before it checks the batch's callbacks).
DIE_AFTER: set[str] = set()


@app.task
async def member(ctx, n: int, die: bool = False) -> int:
    record("member", ctx.job.id)
    if die:
        DIE_AFTER.add(ctx.job.id)
    return n


@app.task(lease=1.0)  # the dying worker may have claimed it with its last finish (SQLite)
async def batch_cb(ctx, batch: str, counts: dict, total: int) -> int:
    record("callback", ctx.job.id)
    return total


def _die_after_finish() -> None:
    import signal

    from conveyor.backends.redis.attempts import Attempts
    from conveyor.backends.sqlite.backend import SqliteBackend

    def die_if_last(job_ids: object) -> None:
        if any(j in DIE_AFTER for j in job_ids):  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGKILL)

    settle = Attempts._settle

    async def redis_settle(self, job_ids, worker):  # the finish committed, the check is next
        die_if_last(job_ids)
        await settle(self, job_ids, worker)

    Attempts._settle = redis_settle  # type: ignore[method-assign]
    from conveyor.backends.postgres import PostgresBackend

    # SQLite and PostgreSQL fire the callbacks in the finish's own transaction: die after it.
    for cls in (SqliteBackend, PostgresBackend):
        for name in ("finish_jobs", "finish_and_claim"):
            original = getattr(cls, name)

            async def after(self, worker, outcomes, *rest, _original=original):
                out = await _original(self, worker, outcomes, *rest)
                die_if_last([o.job_id for o in outcomes])
                return out

            setattr(cls, name, after)


if os.environ.get("PROC_DIE_AFTER_FINISH") == "1":
    _die_after_finish()
