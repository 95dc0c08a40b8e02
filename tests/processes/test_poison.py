"""A poison job (it kills its worker process every time it runs) among innocent jobs, on real
worker processes of several slots: it ends ``failed`` after ``max_stalls`` while every other job
completes, because a job that was running when a worker died runs alone next time."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState, Task
from tests.workers import WorkerProcess, WorkerProcesses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
APP = "tests.processes.poisonapp:app"


@pytest.fixture
async def producer(backend_url: str) -> Conveyor:
    from tests.processes.poisonapp import app as poison_app

    app = Conveyor(backend_url)
    for name, t in poison_app.tasks.items():
        app.tasks[name] = Task(app, t.fn, name, t.options)
    yield app
    await app.close()


def _lines(log: Path) -> list[list[str]]:
    return [x.split() for x in log.read_text().splitlines()] if log.exists() else []


async def test_a_poison_job_fails_alone_and_every_other_job_completes(
    backend_url: str, producer: Conveyor, tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given 2 worker processes of 10 slots, replaced when they die, a poison job (max_stalls 2)
    # and 200 short innocent jobs queued behind it
    log = tmp_path / "runs.log"
    env = {"CONVEYOR_URL": backend_url, "PROC_LOG": str(log)}

    def start() -> WorkerProcess:
        return worker_processes.conveyor(APP, "--concurrency", "10", env=env)

    bad = await producer.enqueue("poison", {})
    batch = await producer.enqueue_many([("work", {"ms": 100}) for i in range(200)])
    procs = [start(), start()]
    # When they run until every job is final
    deadline = time.monotonic() + 60
    while True:
        st = await batch.status()
        counts = {k: v for k, v in st.counts.items() if v}
        if st.finished and (await producer.get(bad.id)).status.is_final:
            break
        assert time.monotonic() < deadline, f"not done in 60 s: {counts}"
        for i, p in enumerate(procs):
            if p.poll() is not None:
                procs[i] = start()
        await asyncio.sleep(0.02)
    # Then the poison failed after max_stalls + 1 runs, every other job completed
    poison = await producer.get(bad.id)
    assert poison.status is JobState.FAILED
    assert poison.stalls == 3
    runs = _lines(log)
    assert [int(x[2]) for x in runs if x[0] == "poison"] == [0, 1, 2]
    assert counts == {"completed": 200}
    # and the claimed job carried its stalls: some innocent job died beside the poison and ran
    # again knowing it (alone at its last chance, stalls 2, and completed)
    stalls = Counter(int(x[2]) for x in runs if x[0] == "work")
    assert stalls[1] + stalls[2] >= 1
    assert set(stalls) <= {0, 1, 2}
