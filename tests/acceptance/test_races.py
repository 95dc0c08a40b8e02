"""Several worker processes on one SQLite file: every job is claimed by exactly one of them."""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.acceptance.conftest import (
    LineLog,
    Workers,
    completed_count,
    final,
    query,
)
from tests.conftest import eventually

pytestmark = pytest.mark.slow

#: A worker's log line for claimed-ahead jobs it handed back (`conveyor.worker.services`).
_HANDED_BACK = re.compile(r"returned (\d+) claimed-ahead jobs to the queue")


async def test_two_workers_complete_2000_jobs_exactly_once(
    producer: Conveyor, workers: Workers, log: LineLog, db_path: Path
):
    # Given two idle worker processes with 20 slots each
    n = 2000
    procs = [await workers.start_ready(concurrency=20) for _ in range(2)]
    # When 2,000 jobs of 5 ms are enqueued at once (one worker alone would need > 0.4 s)
    batch = await producer.enqueue_many([("brief", {"seconds": 0.005})] * n)

    async def all_done() -> bool:
        return await completed_count(producer) == n

    await eventually(all_done, timeout=60, interval=0.05, what="2,000 jobs completed")
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert await p.wait_exit(30) == 0
    # Then each job ran exactly once, all are completed, and both workers took a share
    runs = log.count("run")
    assert set(runs) == set(batch.ids)
    assert set(runs.values()) == {1}
    assert query(db_path, "SELECT status, count(*) FROM jobs GROUP BY status") == [("completed", n)]
    # And each job was claimed once, but for the jobs a worker claimed ahead of its slots and
    # handed back uncharged when no slot took them in time (a loaded machine; each hand-back
    # is logged, and the next claim logs a second 'started')
    handed_back = sum(int(m) for p in procs for m in _HANDED_BACK.findall(p.output()))
    started = query(db_path, "SELECT count(*), count(DISTINCT job_id) FROM events "
                             "WHERE type = 'started'")  # fmt: skip
    assert started == [(n + handed_back, n)], handed_back
    share = Counter(e.pid for e in log.entries("run"))
    assert set(share) == {p.pid for p in procs}, share


async def test_two_idle_workers_race_for_one_job(
    producer: Conveyor, workers: Workers, log: LineLog
):
    # Given two idle worker processes, both woken by every enqueue
    procs = [await workers.start_ready(concurrency=4) for _ in range(2)]
    ids = []
    for _ in range(10):
        # When one job is enqueued (and again, once it finished, ten times over)
        job = await producer.enqueue("noop")
        ids.append(job.id)
        done = await eventually(lambda j=job: final(producer, j.id), what="the job to end")
        assert done.status is JobState.COMPLETED
    # Then each job was started exactly once, by one of the two
    assert log.count("run") == dict.fromkeys(ids, 1)
    for job_id in ids:
        types = [
            e.type.value async for e in producer.events(since="0", follow=False, job_id=job_id)
        ]
        assert types == ["enqueued", "started", "completed"]
    assert {e.pid for e in log.entries("run")} <= {p.pid for p in procs}
