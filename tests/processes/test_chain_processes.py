"""Chains across real worker processes killed with SIGKILL: between storing a step's
completion and delivering the next step, and at a random moment mid-chain. Every chain still
ends with exactly one job per step (counted in the store), delivered by another worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState, Task, WorkflowInfo, WorkflowState
from conveyor.backends.base import ListParams
from tests.conftest import eventually
from tests.processes.chainapp import STEPS
from tests.workers import WorkerProcess, WorkerProcesses

pytestmark = pytest.mark.slow
APP = "tests.processes.chainapp:app"


@pytest.fixture
async def producer(backend_url: str) -> Conveyor:
    from tests.processes.chainapp import app as chain_app

    app = Conveyor(backend_url)
    for name, t in chain_app.tasks.items():
        app.tasks[name] = Task(app, t.fn, name, t.options)
    yield app
    await app.close()


def _start(pool: WorkerProcesses, url: str, log: Path, **env: str) -> WorkerProcess:
    env = {"CONVEYOR_URL": url, "PROC_LOG": str(log), **env}
    return pool.conveyor(APP, "--concurrency", "4", "--queues", "chain-a,chain-b", env=env)


def _lines(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines() if ln] if log.exists() else []


async def _all_done(app: Conveyor, ids: list[str]) -> list[WorkflowInfo] | None:
    infos = [await app.workflow(i) for i in ids]
    return infos if all(i.status is WorkflowState.DONE for i in infos) else None


async def _every_job(app: Conveyor) -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        page = await app.backend.list_jobs(ListParams(limit=500, cursor=cursor))
        out += [j.id for j in page.jobs]
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


async def _exactly_one_job_per_step(app: Conveyor, ids: list[str]) -> None:
    infos = await eventually(lambda: _all_done(app, ids), timeout=60, what="every chain done")
    for info in infos:
        assert info.labels == ["first", "second", "third"], info
        assert [s.status for s in info.steps] == [JobState.COMPLETED] * STEPS
    # And the store holds exactly the chains' jobs: none lost, none created twice
    assert len(await _every_job(app)) == len(ids) * STEPS


async def test_a_worker_killed_between_the_finish_and_the_forward_loses_no_step(
    producer: Conveyor, backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given worker A that stores completions but hangs before delivering the next step
    log = tmp_path / "events.log"
    job = await producer.enqueue("first", {"n": 1})
    a = _start(worker_processes, backend_url, log, CHAIN_STALL_FORWARD="1")

    async def handed_over() -> str | None:
        j = await producer.get(job.id)
        return j.next_jobs[0] if j.status is JobState.COMPLETED and j.next_jobs else None

    nxt = await eventually(handed_over, timeout=20, what="the first step's completion")
    await eventually(lambda: any(x[0] == "forwarding" for x in _lines(log)) or None,
                     timeout=20, what="A to start forwarding")  # fmt: skip
    # When A is killed with SIGKILL there
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    # (on Redis the next step waits in the first queue's outbox: not listed yet, as a read of
    # its id would deliver it; on SQLite and PostgreSQL it was stored with the completion)
    listed = await producer.backend.list_jobs(ListParams(task="second"))
    assert (nxt not in [j.id for j in listed.jobs]) == backend_url.startswith("redis")
    # And worker B starts: its sweep delivers the leftover, and the chain runs to its end
    _start(worker_processes, backend_url, log)
    await _exactly_one_job_per_step(producer, [job.id])


async def test_a_worker_killed_mid_chain_leaves_one_job_per_step(
    producer: Conveyor, backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given 30 chains of 3 steps over two queues, and worker A running them
    log = tmp_path / "events.log"
    ids = [(await producer.enqueue("first", {"n": n})).id for n in range(30)]
    a = _start(worker_processes, backend_url, log)

    async def some_second_steps() -> int | None:
        page = await producer.backend.list_jobs(ListParams(task="second", limit=500))
        return len(page.jobs) if len(page.jobs) >= 5 else None

    await eventually(some_second_steps, timeout=30, what="A mid-way through the chains")
    # When A is killed with SIGKILL mid-chain, and worker B takes over
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    _start(worker_processes, backend_url, log)
    # Then every chain ends done with exactly one job per step
    await _exactly_one_job_per_step(producer, ids)
