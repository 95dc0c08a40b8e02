"""Fan-in across real worker processes killed with SIGKILL: after a parent's park was stored
but before its children were delivered, and after a child's end was stored but before its
settle reached the parent. The parent still resumes exactly once, with every result, and
exactly one set of children exists."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState, Task
from conveyor.backends.base import ListParams
from tests.conftest import eventually, finished
from tests.processes.faninapp import CHILDREN
from tests.workers import WorkerProcess, WorkerProcesses

pytestmark = pytest.mark.slow
APP = "tests.processes.faninapp:app"


@pytest.fixture
async def producer(backend_url: str) -> Conveyor:
    from tests.processes.faninapp import app as fanin_app

    app = Conveyor(backend_url)
    for name, t in fanin_app.tasks.items():
        app.tasks[name] = Task(app, t.fn, name, t.options)
    yield app
    await app.close()


def _start(pool: WorkerProcesses, url: str, log: Path, **env: str) -> WorkerProcess:
    env = {"CONVEYOR_URL": url, "PROC_LOG": str(log), **env}
    return pool.conveyor(APP, "--concurrency", "4", "--queues", "fan-p,fan-c", env=env)


def _lines(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines() if ln] if log.exists() else []


async def _resumed_once_with_every_result(app: Conveyor, job_id: str, log: Path) -> None:
    done = await eventually(lambda: finished(app, job_id), timeout=60, what="the parent done")
    assert done.status is JobState.COMPLETED, done.error
    assert done.result == [i * i for i in range(CHILDREN)]
    resumed = [x[1] for x in _lines(log) if x[0] == "resumed"]
    assert resumed == [job_id]
    # And exactly one set of children exists
    page = await app.backend.list_jobs(ListParams(task="child", limit=500))
    assert len({j.id for j in page.jobs}) == CHILDREN
    assert {j.parent for j in page.jobs} == {job_id}


async def _kill(proc: WorkerProcess) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def test_a_worker_killed_after_the_park_loses_no_child(
    producer: Conveyor, backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given worker A that stores the parent's park but hangs before delivering the children
    log = tmp_path / "events.log"
    job = await producer.enqueue("parent", {"n": CHILDREN})
    a = _start(worker_processes, backend_url, log, FANIN_STALL="park")

    async def parked() -> bool:
        j = await producer.get(job.id)
        return j.status is JobState.AWAITING and j.fanin is not None

    await eventually(parked, timeout=20, what="the parent parked")
    await eventually(lambda: any(x[0] == "forwarding" for x in _lines(log)) or None,
                     timeout=20, what="A to start forwarding")  # fmt: skip
    # When A is killed with SIGKILL there, and worker B starts
    await _kill(a)
    _start(worker_processes, backend_url, log)
    # Then the children are delivered once and the parent resumes once with every result
    await _resumed_once_with_every_result(producer, job.id, log)


async def test_a_worker_killed_after_a_child_ended_still_settles_it(
    producer: Conveyor, backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given worker A that stores a child's end but hangs before forwarding its settle
    log = tmp_path / "events.log"
    job = await producer.enqueue("parent", {"n": CHILDREN})
    a = _start(worker_processes, backend_url, log, FANIN_STALL="settle")

    async def a_child_completed() -> bool:
        page = await producer.backend.list_jobs(
            ListParams(task="child", status=JobState.COMPLETED, limit=10)
        )
        return bool(page.jobs)

    await eventually(a_child_completed, timeout=20, what="a child completed")
    await eventually(lambda: any(x[0] == "forwarding" for x in _lines(log)) or None,
                     timeout=20, what="A to start forwarding")  # fmt: skip
    # When A is killed with SIGKILL there (children it held come back when their leases
    # expire), and worker B starts
    await _kill(a)
    _start(worker_processes, backend_url, log)
    # Then every child's end reaches the parent once, and it resumes once with every result
    await _resumed_once_with_every_result(producer, job.id, log)
