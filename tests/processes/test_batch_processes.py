"""Real worker processes: a worker killed -9 right after it finished a batch's last member (on
Redis: before it checked the batch), and the batch's callback still runs exactly once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.conftest import eventually
from tests.processes.test_worker_processes import Workers
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses) -> Workers:
    return Workers(backend_url, tmp_path / "events.log", worker_processes)


@pytest.fixture
async def producer(backend_url: str) -> Conveyor:
    from conveyor import Task
    from tests.processes.procapp import app as proc_app

    app = Conveyor(backend_url)
    for name, t in proc_app.tasks.items():
        app.tasks[name] = Task(app, t.fn, name, t.options)
    yield app
    await app.close()


async def _callback_done(app: Conveyor) -> list[str] | None:
    jobs = (await app.list(task="batch_cb", limit=10)).jobs
    return [j.id for j in jobs] if jobs and jobs[0].status is JobState.COMPLETED else None


async def test_a_worker_killed_after_the_last_finish_still_leads_to_one_callback(
    producer: Conveyor, workers: Workers
) -> None:
    # Given a batch of 4 members with on_complete, the last of them (lowest priority) one whose
    # worker kills itself with SIGKILL right after its finish is stored
    items = [("member", {"n": i}) for i in range(3)]
    items.append({"task": "member", "payload": {"n": 3, "die": True}, "priority": "low"})
    batch = await producer.enqueue_many(items, on_complete="batch_cb")
    env = {"CONVEYOR_URL": workers.url, "PROC_LOG": str(workers.log),
           "PROC_DIE_AFTER_FINISH": "1"}  # fmt: skip
    # When worker A runs the members (one at a time) and dies after the last one's finish
    a = workers.pool.conveyor("tests.processes.procapp:app", "--concurrency", "1", env=env)
    await eventually(lambda: a.popen.poll() is not None, timeout=30, what="worker A to die")
    assert a.popen.returncode == -signal.SIGKILL
    last = await producer.get(batch.ids[3])
    # Then the last member's completion is stored
    assert last.status is JobState.COMPLETED
    # When worker B runs (its maintenance sweeps the batch on Redis)
    workers.start(concurrency=2)
    ids = await eventually(lambda: _callback_done(producer), timeout=30, what="the callback")
    # Then exactly one callback job exists and ran once, with every member counted
    assert len(ids) == 1
    cb = await producer.get(ids[0])
    assert cb.result == 4 and cb.payload["counts"] == {"completed": 4, "failed": 0,
                                                       "cancelled": 0}  # fmt: skip
    runs = [x for x in workers.lines() if x[0] == "callback"]
    assert [x[1] for x in runs] == ids
    members = [x[1] for x in workers.lines() if x[0] == "member"]
    assert sorted(members) == sorted(batch.ids)  # each member ran once
    st = await batch.status()
    assert st.record is not None and st.record.fired and os.path.exists(workers.log)
