"""A `conveyor worker` process whose hook raises in every worker-side method runs every job,
logs each failure naming the hook (never the payload) and exits 0 on SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.conftest import eventually
from tests.workers import WorkerProcesses

pytestmark = [pytest.mark.timeout(60)]
SECRET = "s3cr3t-in-the-payload"


@pytest.mark.allow_errors(r"hook Raising\.\w+ failed")
async def test_a_worker_process_with_a_raising_hook_loses_nothing(
    tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given 20 jobs and a worker process whose hook raises everywhere
    url = f"sqlite:///{tmp_path}/p.db"
    producer = Conveyor(url)
    producer.declare("work")
    try:
        batch = await producer.enqueue_many(
            [("work", {"secret": SECRET, "i": i}) for i in range(20)]
        )
        w = worker_processes.conveyor(
            "tests.hooks.raising_app:app", "--concurrency", "4", env={"CONVEYOR_URL": url}
        )

        # When it runs them
        async def done() -> bool:
            return (await batch.status()).finished

        await eventually(done, what="every job to end")
        jobs = [await producer.get(i) for i in batch.ids]
    finally:
        await producer.close()
    # Then every job completed with its result
    assert [j.status for j in jobs] == [JobState.COMPLETED] * 20
    assert [j.result for j in jobs] == list(range(20))
    # And SIGTERM still stops it cleanly (on_worker_stop raising too)
    w.send_signal(signal.SIGTERM)
    assert await w.wait_exit(15) == 0
    out = w.output()
    for method in ("around_execute", "after_outcome", "on_worker_start", "on_worker_stop"):
        assert f"hook Raising.{method} failed" in out
    assert out.count("hook Raising.around_execute failed") == 20
    assert SECRET not in out
