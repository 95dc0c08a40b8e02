"""Graceful shutdown of a worker process: on SIGTERM it stops claiming, lets active jobs finish
within the grace period, returns the rest to the queue without charging an attempt, exits 0."""

from __future__ import annotations

import signal
import time

import pytest

from conveyor import Conveyor, JobState
from tests.acceptance.conftest import LineLog, Workers, completed_count, final
from tests.conftest import eventually

pytestmark = pytest.mark.slow


async def test_sigterm_lets_active_jobs_finish_and_leaves_queued_ones(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given a worker with 4 slots running four 1 s jobs, and 10 more queued
    grace = 10.0
    jobs = [await producer.enqueue("slow", {"seconds": 1.0}) for _ in range(14)]
    ids = [j.id for j in jobs]
    p = workers.start(concurrency=4, grace=grace)
    await eventually(lambda: len(log.entries("start")) >= 4, timeout=20, what="4 jobs to start")
    # When it gets SIGTERM
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    # Then it exits 0 once the 4 active jobs finished, well within the grace
    assert await p.wait_exit(grace + 5) == 0
    assert time.monotonic() - t0 < grace
    started = set(log.count("start"))
    assert len(started) == 4
    assert set(log.count("end")) == started
    assert not log.entries("cancelled")
    after = {i: await producer.get(i) for i in ids}
    assert {i for i, j in after.items() if j.status is JobState.COMPLETED} == started
    queued = [j for i, j in after.items() if i not in started]
    assert [(j.status, j.attempt) for j in queued] == [(JobState.QUEUED, 0)] * 10
    # When a worker starts again, it completes the rest, each job having run exactly once
    await workers.start_ready(concurrency=10)
    for i in ids:
        done = await eventually(lambda i=i: final(producer, i), timeout=20, what=f"job {i}")
        assert (done.status, done.attempt) == (JobState.COMPLETED, 1)
    assert log.count("start") == dict.fromkeys(ids, 1)


async def test_sigterm_returns_a_job_longer_than_the_grace_uncharged(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given a worker with a 0.5 s shutdown grace running a 30 s job
    grace = 0.5
    p = await workers.start_ready(concurrency=1, grace=grace)
    job = await producer.enqueue("slow", {"seconds": 30.0})
    await eventually(lambda: log.count("start")[job.id], what="the job to start")
    # When it gets SIGTERM
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    # Then the handler is cancelled after the grace, the process exits 0 promptly, and the job
    # is back in the queue with its attempt not charged
    assert await p.wait_exit(10) == 0
    assert time.monotonic() - t0 < grace + 5
    assert log.of(job.id) == [("start", p.pid), ("cancelled", p.pid)]
    back = await producer.get(job.id)
    assert (back.status, back.attempt, back.stalls) == (JobState.QUEUED, 0, 0)
    assert back.worker is None
    # When another worker comes (one that caps sleeps, to keep this test short)
    q = await workers.start_ready(concurrency=1, env={"ACCEPT_SLEEP_CAP": "0.1"})
    # Then it completes the job on its first charged attempt
    done = await eventually(lambda: final(producer, job.id), timeout=20, what="the job to end")
    assert (done.status, done.attempt) == (JobState.COMPLETED, 1)
    assert log.of(job.id)[2:] == [("start", q.pid), ("end", q.pid)]


async def test_sigint_stops_an_idle_worker_and_unregisters_it(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given an idle worker, listed in the stats
    p = await workers.start_ready(concurrency=2)
    assert (await producer.stats(["default"]))["default"].workers == 1
    # When it gets SIGINT (Ctrl-C)
    p.send_signal(signal.SIGINT)
    # Then it stops cleanly, says so, and is no longer listed
    assert await p.wait_exit(10) == 0
    assert [e.pid for e in log.entries("exit")] == [p.pid]
    stats = (await producer.stats(["default"]))["default"]
    assert (stats.workers, stats.concurrency) == (0, 0)


async def test_sigterm_mid_drain_loses_and_repeats_nothing(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given two workers draining 2,000 quick jobs
    n = 2000
    a, b = [await workers.start_ready(concurrency=20) for _ in range(2)]
    batch = await producer.enqueue_many([("noop", {})] * n)
    await eventually(
        lambda: sum(e.pid == a.pid for e in log.entries("run")) >= 100,
        timeout=30, interval=0.005, what="worker A to be busy",
    )  # fmt: skip
    # When A gets SIGTERM in the middle of it
    a.send_signal(signal.SIGTERM)
    assert await a.wait_exit(30) == 0

    # Then B finishes the rest, and every job ran exactly once: a graceful stop acknowledges
    # what it finished and hands back what it had not started
    async def all_done() -> bool:
        return await completed_count(producer) == n

    await eventually(all_done, timeout=60, interval=0.05, what="all jobs completed")
    runs = log.count("run")
    assert set(runs) == set(batch.ids)
    assert max(runs.values()) == 1
    assert {e.pid for e in log.entries("run")} == {a.pid, b.pid}
