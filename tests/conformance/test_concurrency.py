"""The worker's concurrency cap, isolation of failing jobs, and sync handlers."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor import Conveyor, JobState
from tests.conftest import eventually


async def test_async_concurrency_cap_is_reached_and_never_exceeded(app: Conveyor) -> None:
    # Given handlers that record how many of them run at once
    running = peak = done = 0

    @app.task
    async def busy(i: int) -> int:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        done += 1
        return i

    # When 30 jobs run on a worker with 3 slots
    await app.enqueue_many([("busy", {"i": i}) for i in range(30)])
    async with app.worker(concurrency=3):
        await eventually(lambda: done == 30, what="30 jobs done")
    # Then exactly 3 ran at once at the peak, never more
    assert peak == 3
    assert (await app.stats())["default"].counts["completed"] == 30


async def test_sync_concurrency_cap_holds_in_the_thread_pool(app: Conveyor) -> None:
    # Given sync handlers (run in threads) that record how many run at once
    lock = threading.Lock()
    state = {"running": 0, "peak": 0, "done": 0}

    @app.task
    def blocking(i: int) -> int:
        with lock:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
        time.sleep(0.01)
        with lock:
            state["running"] -= 1
            state["done"] += 1
        return i

    # When 20 of them run with 4 slots
    await app.enqueue_many([("blocking", {"i": i}) for i in range(20)])
    async with app.worker(concurrency=4):
        await eventually(lambda: state["done"] == 20, what="20 jobs done")
    # Then 4 ran at once at the peak, never more
    assert state["peak"] == 4


async def test_one_failing_job_does_not_disturb_the_others(app: Conveyor) -> None:
    # Given ten jobs of which one raises
    @app.task(retries=0)
    async def maybe(i: int) -> int:
        if i == 3:
            raise RuntimeError("job 3 broke")
        return i * 10

    batch = await app.enqueue_many([("maybe", {"i": i}) for i in range(10)])
    # When they run concurrently
    async with app.worker(concurrency=4):
        await batch.wait(timeout=10)
    # Then only that one failed; every other completed with its own result
    for i, job_id in enumerate(batch.ids):
        job = await app.get(job_id)
        if i == 3:
            assert job.status is JobState.FAILED
            assert job.error is not None and job.error["message"] == "job 3 broke"
        else:
            assert job.status is JobState.COMPLETED
            assert job.result == i * 10
    counts = (await app.stats())["default"].counts
    assert (counts["completed"], counts["failed"]) == (9, 1)


async def test_sync_handlers_run_in_a_thread_pool_not_on_the_event_loop(app: Conveyor) -> None:
    # Given a sync handler that reports the thread it runs on
    loop_thread = threading.get_ident()

    @app.task
    def where() -> int:
        return threading.get_ident()

    # When it runs on an embedded worker
    async with app.worker(concurrency=2):
        job = await where.enqueue()
        thread = await app.wait(job.id, timeout=5)
    # Then it did not run on the event loop's thread
    assert thread != loop_thread


async def test_a_blocking_sync_handler_does_not_stall_async_jobs(app: Conveyor) -> None:
    # Given a sync handler that blocks its thread until released, and a quick async task
    release = threading.Event()

    @app.task
    def hog() -> str:
        release.wait(10)
        return "hog"

    @app.task
    async def quick() -> str:
        return "quick"

    async with app.worker(concurrency=2):
        hog_job = await hog.enqueue()
        await eventually(
            lambda: _is(app, hog_job.id, JobState.ACTIVE), what="the sync job to start"
        )
        # When an async job arrives while the thread is blocked
        quick_job = await quick.enqueue()
        # Then it completes without waiting for the blocked one
        assert await app.wait(quick_job.id, timeout=5) == "quick"
        assert (await app.get(hog_job.id)).status is JobState.ACTIVE
        release.set()
        assert await app.wait(hog_job.id, timeout=5) == "hog"


async def _is(app: Conveyor, job_id: str, state: JobState) -> bool:
    return (await app.get(job_id)).status is state
