"""Durability across process death: a job whose worker was killed with SIGKILL is rescued and
completed by another worker, and killing a worker while the file is busy corrupts nothing."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.acceptance.conftest import LineLog, Workers, completed_count, final, query
from tests.conftest import eventually

pytestmark = pytest.mark.slow


async def test_kill_9_mid_job_is_completed_by_another_worker(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given worker A running a 3 s job under a 1 s lease
    a = await workers.start_ready(concurrency=1)
    job = await producer.enqueue("slow", {"seconds": 3.0})
    await eventually(lambda: log.count("start")[job.id] == 1, what="worker A to start the job")
    # When A is killed with SIGKILL mid-job and worker B starts
    a.kill()
    b = await workers.start_ready(concurrency=1)
    # Then B completes it once A's lease expired: one stall counted, the attempt not charged
    done = await eventually(lambda: final(producer, job.id), timeout=20, what="the job to end")
    assert done.status is JobState.COMPLETED
    assert done.result == "done"
    assert done.stalls == 1
    assert done.attempt == 1
    assert log.of(job.id) == [("start", a.pid), ("start", b.pid), ("end", b.pid)]
    types = [e.type.value async for e in producer.events(since="0", follow=False, job_id=job.id)]
    assert types == ["enqueued", "started", "stalled", "started", "completed"]


async def test_kill_9_while_the_file_is_busy_does_not_corrupt_it(
    producer: Conveyor, workers: Workers, log: LineLog, db_path: Path
):
    # Given three workers draining 3,000 jobs from one file
    n = 3000
    procs = [await workers.start_ready(concurrency=10) for _ in range(3)]
    victim = procs[0]
    batch = await producer.enqueue_many([("churn", {})] * n)

    # When one of them is killed with SIGKILL mid-run, while all three are writing
    def busy() -> bool:
        ends = log.entries("end")
        return len(ends) >= n // 5 and any(e.pid == victim.pid for e in ends)

    await eventually(busy, timeout=30, interval=0.005, what="a fifth done, some by the victim")
    victim.kill()
    # Then the others finish every job (the victim's held jobs once their lease expires)
    await eventually(
        lambda: _all_completed(producer, n), timeout=60, interval=0.05, what="all jobs completed"
    )
    for p in procs[1:]:
        p.send_signal(signal.SIGTERM)
    for p in procs[1:]:
        assert await p.wait_exit(30) == 0
    # ... and the file is intact, its counters agree with its rows, every job ran at least once
    assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    rows = dict(query(db_path, "SELECT status, count(*) FROM jobs GROUP BY status"))
    assert rows == {"completed": n}
    counts = {s: c for s, c in query(db_path, "SELECT status, n FROM counts") if c}
    assert counts == rows
    assert query(db_path, "SELECT attempt, count(*) FROM jobs GROUP BY attempt") == [(1, n)]
    assert set(log.count("end")) == set(batch.ids)
    # The kill landed mid-run: the victim's held jobs were rescued (a stall each, no attempt
    # charged), and only those may have run twice
    rescued = {r[0] for r in query(db_path, "SELECT job_id FROM events WHERE type = 'stalled'")}
    assert rescued
    assert rescued == {r[0] for r in query(db_path, "SELECT id FROM jobs WHERE stalls = 1")}
    starts = Counter(e.subject for e in log.entries("start"))
    repeated = {job for job, k in starts.items() if k > 1}
    assert repeated <= rescued, f"{len(repeated - rescued)} jobs ran twice without a rescue"
    assert max(starts.values()) <= 2
    victim_starts = {e.subject for e in log.entries("start") if e.pid == victim.pid}
    assert repeated <= victim_starts


async def _all_completed(app: Conveyor, n: int) -> bool:
    return await completed_count(app) == n
