"""``app.sync``: the producer API from plain sync code (Flask, Django, scripts)."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Conveyor, JobNotFound, JobState


async def test_sync_facade_from_a_thread_while_a_worker_runs(app: Conveyor) -> None:
    # Given a running worker in this event loop
    @app.task
    async def double(n: int) -> int:
        return 2 * n

    def sync_code() -> tuple[JobState, int]:
        # When plain sync code (no event loop of its own) enqueues, reads and waits
        job = app.sync.enqueue("double", {"n": 21})
        got = app.sync.get(job.id)
        result = app.sync.wait(job.id, timeout=5)
        return got.status, result

    async with app.worker(concurrency=1):
        status, result = await asyncio.to_thread(sync_code)
    # Then each call returned as its async twin would
    assert status in (JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED)
    assert result == 42


def test_sync_facade_in_a_sync_test(backend_url: str) -> None:
    # Given an app used only from sync code
    app = Conveyor(backend_url)

    @app.task
    async def t(n: int) -> None:
        return None

    try:
        # When it enqueues and reads through app.sync
        job = app.sync.enqueue("t", {"n": 1})
        batch = app.sync.enqueue_many([("t", {"n": 2}), ("t", {"n": 3})])
        # Then the jobs are stored and readable, and errors surface as in async code
        assert app.sync.get(job.id).status is JobState.QUEUED
        assert len(app.sync.list().jobs) == 3
        assert len(batch) == 2
        assert app.sync.stats()["default"].counts["queued"] == 3
        with pytest.raises(JobNotFound):
            app.sync.get("no-such-job")
        # And only the app's async methods have a sync form
        with pytest.raises(AttributeError):
            app.sync.queues()
    finally:
        asyncio.run(app.close())
