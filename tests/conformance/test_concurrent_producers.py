"""The producer under concurrent use: many calls at once on one event loop (an HTTP server's
requests), and ``app.sync`` from many threads. Calls wait for a connection, never fail for
lack of one."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conveyor import Conveyor, JobState
from tests.conftest import eventually


async def test_a_thousand_concurrent_calls_on_one_loop_all_succeed(app: Conveyor) -> None:
    # Given a stored job
    @app.task
    async def work(n: int) -> int:
        return n

    first = await app.enqueue("work", {"n": 0})
    # When 1,000 reads and 1,000 enqueues run at once on one event loop
    reads = [app.get(first.id) for _ in range(1000)]
    writes = [app.enqueue("work", {"n": i}) for i in range(1, 1001)]
    got = await asyncio.gather(*reads, *writes)
    # Then every call returned its job (none failed for want of a connection)
    assert all(j.id == first.id for j in got[:1000])
    assert sorted(j.payload["n"] for j in got[1000:]) == list(range(1, 1001))
    assert (await app.stats())["default"].counts[JobState.QUEUED.value] == 1001


def _embedded_worker(
    app: Conveyor, concurrency: int, started: threading.Event, stopping: threading.Event
) -> None:
    """A worker on a loop of its own thread, as a sync web app embeds one; in asyncio debug
    mode, which refuses calls into the loop from other threads."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        async with app.worker(concurrency=concurrency, shutdown_grace=0.5):
            started.set()
            await loop.run_in_executor(None, stopping.wait)

    asyncio.run(main())


async def test_app_sync_from_sixteen_threads_while_a_worker_runs(app: Conveyor) -> None:
    # Given a worker embedded in its own thread, running jobs that hold until cancelled
    began: set[int] = set()
    stopped: set[int] = set()

    @app.task
    async def hold(n: int) -> None:
        began.add(n)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.add(n)
            raise

    @app.task
    async def double(n: int) -> int:
        return 2 * n

    threads = 16
    start = threading.Barrier(threads)

    def producer(i: int) -> tuple[JobState, int, set[str]]:
        # When 16 threads at once enqueue, read, cancel and wait through app.sync
        start.wait()
        held = app.sync.enqueue("hold", {"n": i})
        deadline = time.monotonic() + 10
        while app.sync.get(held.id).status is not JobState.ACTIVE:
            assert time.monotonic() < deadline, "the hold job never started"
            time.sleep(0.005)
        cancelled = app.sync.cancel(held.id)
        job = app.sync.enqueue("double", {"n": i})
        result = app.sync.wait(job.id, timeout=10)
        ids = {app.sync.get(job.id).id for _ in range(20)}
        return cancelled.status, result, ids

    started, stopping = threading.Event(), threading.Event()
    # A daemon thread: should the worker's loop be left broken, it cannot hold up the run.
    worker = threading.Thread(
        target=_embedded_worker, args=(app, threads, started, stopping), daemon=True
    )
    worker.start()
    pool = ThreadPoolExecutor(threads)
    loop = asyncio.get_running_loop()
    try:
        assert await asyncio.to_thread(started.wait, 10), "the worker did not start"
        got = await asyncio.gather(
            *(loop.run_in_executor(pool, producer, i) for i in range(threads))
        )
        # Then every call returned as its async twin would
        assert [status for status, _, _ in got] == [JobState.CANCELLED] * threads
        assert [result for _, result, _ in got] == [2 * i for i in range(threads)]
        assert all(len(ids) == 1 for _, _, ids in got)
        # And each cancel reached its handler, if it had started (a prefetched job never runs)
        await eventually(lambda: stopped == began, what="every started handler cancelled")
        assert began
    finally:
        stopping.set()
        pool.shutdown(wait=False)
        await asyncio.to_thread(worker.join, 10)
    assert not worker.is_alive(), "the worker did not stop"
