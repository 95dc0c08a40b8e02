"""Wake-ups cross processes: an idle worker process picks up a new job (and learns about a cancel)
at once instead of on its next poll, honours a delay, and burns no CPU while idle."""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest

from conveyor import Conveyor, JobState
from tests.acceptance.conftest import LineLog, Workers, final
from tests.conftest import eventually

pytestmark = pytest.mark.slow
NO_POLL = 30.0  # an idle re-check interval far above every bound asserted below


async def test_idle_worker_picks_up_a_new_job_promptly(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given an idle worker process that re-checks the database only every 30 s by itself
    await workers.start_ready(concurrency=4, poll=NO_POLL)
    latencies = []
    for _ in range(5):
        # When a job is enqueued from this process
        t0 = time.time()
        job = await producer.enqueue("noop")
        run = await eventually(
            lambda j=job: [e for e in log.entries("run") if e.subject == j.id],
            timeout=NO_POLL / 2, interval=0.002, what="the worker to pick the job up",
        )  # fmt: skip
        latencies.append(run[0].ts - t0)
        await eventually(lambda j=job: final(producer, j.id), what="the job to end")
    # Then it started within a second each time: the enqueue woke it (bench/ measures the real
    # latency; this bound only proves the wake-up crosses processes)
    assert max(latencies) < 1.0, latencies


async def test_delayed_job_is_not_started_before_its_delay(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given an idle worker process that re-checks the database only every 30 s by itself
    await workers.start_ready(concurrency=4, poll=NO_POLL)
    # When a job is enqueued with a 0.5 s delay
    t0 = time.time()
    job = await producer.enqueue("noop", delay=0.5)
    assert job.status is JobState.SCHEDULED
    run = await eventually(lambda: log.entries("run"), timeout=NO_POLL / 2, what="the job to run")
    # Then it starts after the delay, and soon after (the worker timed its own wake-up)
    assert job.scheduled_for is not None
    assert run[0].ts >= t0 + 0.5
    assert run[0].ts >= job.scheduled_for
    assert run[0].ts - job.scheduled_for < 1.0


async def test_idle_worker_uses_almost_no_cpu(workers: Workers):
    # Given an idle worker process with default settings
    p = await workers.start_ready(concurrency=10)
    proc = psutil.Process(p.pid)
    # When it stays idle for 2 s: a fixed window is inherent to measuring CPU use, and nothing
    # is polled meanwhile, so only the worker's own timers run
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    await asyncio.sleep(2.0)
    cpu1 = proc.cpu_times()
    wall = time.monotonic() - t0
    used = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall
    # Then it used under 5% of one core: it blocks while idle instead of polling
    assert used < 0.05, f"idle worker used {used:.1%} of a core"


async def test_cancel_reaches_an_active_job_in_another_process(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given a one-slot worker process (30 s leases, so heartbeats come only every 2 s) running a
    # 30 s async job, with another job queued behind it
    p = await workers.start_ready(concurrency=1, tasks=["sleeper", "noop"])
    long = await producer.enqueue("sleeper", {"seconds": 30.0})
    nxt = await producer.enqueue("noop")
    await eventually(lambda: log.count("start")[long.id], what="the long job to start")
    # When this process cancels it
    t0 = time.monotonic()
    job = await producer.cancel(long.id)
    assert job.status is JobState.CANCELLED
    # Then its handler is cancelled promptly, where it awaits
    await eventually(lambda: log.count("cancelled")[long.id], timeout=10, what="the cancel")
    assert time.monotonic() - t0 < 1.0
    # ... and the worker goes on to the next job, leaving the cancelled one cancelled
    done = await eventually(lambda: final(producer, nxt.id), what="the next job to end")
    assert done.status is JobState.COMPLETED
    assert [e.pid for e in log.entries("run")] == [p.pid]
    assert log.of(long.id) == [("start", p.pid), ("cancelled", p.pid)]
    after = await producer.get(long.id)
    assert after.status is JobState.CANCELLED
    types = [e.type.value async for e in producer.events(since="0", follow=False, job_id=long.id)]
    assert types == ["enqueued", "started", "cancelled"]
