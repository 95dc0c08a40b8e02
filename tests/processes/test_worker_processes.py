"""Real worker processes: kill -9 mid-job, SIGTERM with active jobs, several workers racing for
the same jobs (each completed exactly once), and an idle worker that does not burn CPU."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from conveyor import Conveyor, JobState
from tests.conftest import eventually
from tests.workers import WorkerProcess, WorkerProcesses

pytestmark = pytest.mark.slow


class Workers:
    """`conveyor worker` processes of procapp on one store; their handlers log to ``log``."""

    def __init__(self, url: str, log: Path, pool: WorkerProcesses) -> None:
        self.url = url
        self.log = log
        self.pool = pool

    def start(self, concurrency: int = 4, grace: float = 30.0) -> WorkerProcess:
        env = {"CONVEYOR_URL": self.url, "PROC_LOG": str(self.log)}
        args = ["--concurrency", str(concurrency), "--shutdown-grace", str(grace)]
        return self.pool.conveyor("tests.processes.procapp:app", *args, env=env)

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines() if line]


@pytest.fixture
def workers(backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses) -> Workers:
    return Workers(backend_url, tmp_path / "events.log", worker_processes)


@pytest.fixture
async def producer(backend_url: str) -> Conveyor:
    """A producer on the same store with the workers' task definitions (for validation)."""
    from conveyor import Task
    from tests.processes.procapp import app as proc_app

    app = Conveyor(backend_url)
    for name, t in proc_app.tasks.items():
        app.tasks[name] = Task(app, t.fn, name, t.options)
    yield app
    await app.close()


async def _state(app: Conveyor, job_id: str) -> JobState:
    return (await app.get(job_id)).status


async def test_kill_9_mid_job_is_completed_by_another_worker(producer: Conveyor, workers: Workers):
    # Given worker A running a 3 s job under a 1 s lease
    job = await producer.enqueue("slow", {"seconds": 3.0})
    a = workers.start(concurrency=1)
    await eventually(lambda: any(x[0] == "start" for x in workers.lines()), timeout=15,
                     what="worker A to start the job")  # fmt: skip
    # When A is killed with SIGKILL and worker B starts
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    b = workers.start(concurrency=1)
    # Then B completes the job once A's lease expired; the stall is counted, the attempt is not
    done = await eventually(lambda: _final(producer, job.id), timeout=30, what="job to finish")
    assert done.status is JobState.COMPLETED
    assert done.stalls == 1
    assert done.attempt == 1
    ends = [x for x in workers.lines() if x[0] == "end"]
    assert [int(x[2]) for x in ends] == [b.pid]
    types = [e.type.value async for e in producer.events(since="0", follow=False, job_id=job.id)]
    assert "stalled" in types


async def _final(app: Conveyor, job_id: str):
    job = await app.get(job_id)
    return job if job.status.is_final else None


async def test_sigterm_lets_active_jobs_finish_and_exits_0(producer: Conveyor, workers: Workers):
    # Given a worker with 2 slots running 2 one-second jobs, and 4 more queued
    jobs = [await producer.enqueue("slow", {"seconds": 1.0}) for _ in range(6)]
    p = workers.start(concurrency=2, grace=20)
    await eventually(lambda: sum(x[0] == "start" for x in workers.lines()) >= 2, timeout=15,
                     what="2 jobs to start")  # fmt: skip
    # When it gets SIGTERM
    p.send_signal(signal.SIGTERM)
    # Then it exits 0 after the active jobs completed; the queued ones never started
    assert await asyncio.to_thread(p.wait, 30) == 0
    states = Counter([(await _state(producer, j.id)).value for j in jobs])
    started = {x[1] for x in workers.lines() if x[0] == "start"}
    assert states["completed"] == len(started)
    assert states["queued"] == 6 - len(started)


async def test_sigterm_returns_a_job_longer_than_the_grace_uncharged(
    producer: Conveyor, workers: Workers
):
    # Given a worker with a 0.3 s shutdown grace running a 30 s job
    job = await producer.enqueue("slow", {"seconds": 30.0})
    p = workers.start(concurrency=1, grace=0.3)
    await eventually(lambda: workers.lines(), timeout=15, what="the job to start")
    # When it gets SIGTERM
    p.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(p.wait, 30) == 0
    # Then the job is back in the queue and its attempt was not charged
    back = await producer.get(job.id)
    assert back.status is JobState.QUEUED
    assert back.attempt == 0


async def test_three_workers_complete_5000_jobs_exactly_once(producer: Conveyor, workers: Workers):
    # Given 5,000 jobs and three worker processes racing for them
    batch = await producer.enqueue_many([("quick", {"n": i}) for i in range(5000)])
    procs = [workers.start(concurrency=20) for _ in range(3)]
    # When they drain the queue
    st = await batch.wait(timeout=90, poll=0.05)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert await asyncio.to_thread(p.wait, 30) == 0
    # Then every job completed, each ran exactly once, and every worker took a share
    assert st.counts == {"completed": 5000}
    runs = Counter(x[1] for x in workers.lines() if x[0] == "run")
    assert len(runs) == 5000
    assert set(runs.values()) == {1}
    pids = Counter(x[2] for x in workers.lines() if x[0] == "run")
    assert len(pids) == 3


async def test_thirty_long_jobs_start_on_the_thirty_slots_of_three_worker_processes(
    producer: Conveyor, workers: Workers
):
    # Given three idle worker processes of 10 slots each (default prefetch)
    procs = [workers.start(concurrency=10) for _ in range(3)]
    first = await producer.enqueue("quick", {"n": 0})
    await producer.wait(first.id, timeout=15)
    # When 30 jobs of a minute are enqueued one at a time
    for _ in range(30):
        await producer.enqueue("slow", {"seconds": 60.0})

    # Then all 30 start, on 10 slots of each worker, while none has finished: no worker keeps
    # a claimed job waiting behind its busy slots while another has free ones
    def started() -> Counter[str]:
        return Counter(x[2] for x in workers.lines() if x[0] == "start")

    await eventually(lambda: sum(started().values()) == 30, timeout=20, what="30 jobs started")
    assert sorted(started().values()) == [10, 10, 10]
    assert set(started()) == {str(p.pid) for p in procs}
    assert not [x for x in workers.lines() if x[0] == "end"]


async def test_an_idle_worker_picks_up_across_processes_and_burns_no_cpu(
    producer: Conveyor, workers: Workers
):
    # Given an idle worker process, warmed up
    p = workers.start(concurrency=4)
    first = await producer.enqueue("quick", {"n": 0})
    await producer.wait(first.id, timeout=15)
    proc = psutil.Process(p.pid)
    # When it stays idle for 2 s (the measured window is the point of this test)
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    await asyncio.sleep(2.0)
    used = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    # Then it used under 5% of a core, and still picks a new job up promptly
    assert used < 0.05, f"idle worker used {used:.1%} CPU"
    t1 = time.monotonic()
    job = await producer.enqueue("quick", {"n": 1})
    await producer.wait(job.id, timeout=5, poll=0.002)
    assert time.monotonic() - t1 < 1.0


async def test_sigterm_exit_fits_in_the_grace_period(producer: Conveyor, workers: Workers):
    # Given a worker with a 3 s shutdown grace running 20 jobs of 30 s
    jobs = [await producer.enqueue("slow", {"seconds": 30.0}) for _ in range(20)]
    p = workers.start(concurrency=20, grace=3.0)
    await eventually(lambda: sum(x[0] == "start" for x in workers.lines()) == 20, timeout=15,
                     what="20 jobs to start")  # fmt: skip
    # When it gets SIGTERM
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(p.wait, 30)
    took = time.monotonic() - t0
    # Then the whole process exited 0 within the grace, measured from the signal (the jobs'
    # wait, handing them back and disconnecting included), and every job is back in the queue
    # with its attempt not charged
    assert code == 0
    assert took < 3.0, f"exit {took:.3f}s after SIGTERM, grace 3.0s"
    for j in jobs:
        back = await producer.get(j.id)
        assert (back.status, back.attempt) == (JobState.QUEUED, 0)
    print(f"exit {took:.3f}s after SIGTERM, grace 3.0s")
