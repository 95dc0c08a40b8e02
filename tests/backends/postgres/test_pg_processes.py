"""Worker processes on PostgreSQL: the shared process tests (3 workers x 5,000 jobs exactly
once, kill -9 mid-job) run here on the session's cluster, and a restart of PostgreSQL mid-run
loses no job."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import BackendUnavailable, Conveyor
from tests.conftest import eventually
from tests.processes.test_worker_processes import (  # the same tests, on PostgreSQL here
    Workers,
    producer,  # noqa: F401 (fixture)
    test_kill_9_mid_job_is_completed_by_another_worker,  # noqa: F401
    test_three_workers_complete_5000_jobs_exactly_once,  # noqa: F401
    workers,  # noqa: F401 (fixture)
)
from tests.servers import PostgresServer
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.slow


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[PostgresServer]:
    """A cluster of this test's own: it is restarted."""
    srv = PostgresServer(tmp_path / "pg")
    yield srv
    srv.remove()


async def test_workers_ride_out_a_postgres_restart_and_lose_nothing(
    own_server: PostgresServer, tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    from conveyor import Task
    from tests.processes.procapp import app as proc_app

    url = f"{own_server.url}?schema=restart"
    app = Conveyor(url)
    for name, t in proc_app.tasks.items():
        app.tasks[name] = Task(app, t.fn, name, t.options)
    # Given two worker processes draining 3,000 jobs
    batch = await app.enqueue_many([("quick_leased", {"n": i}) for i in range(3000)])
    w = Workers(url, tmp_path / "events.log", worker_processes)
    procs = [w.start(concurrency=20) for _ in range(2)]
    # (both of them: a worker still starting when the server stops exits, as it should)
    await eventually(
        lambda: len(w.lines()) >= 300 and len({x[2] for x in w.lines()}) == 2,
        timeout=30,
        what="both workers to be draining",
    )
    # When PostgreSQL stops (immediate shutdown) mid-run and comes back 1 s later
    await asyncio.to_thread(own_server.stop)
    await asyncio.sleep(1.0)  # the outage itself: workers and producers see no server
    with pytest.raises(BackendUnavailable):
        await app.get(batch.ids[0])
    await asyncio.to_thread(own_server.start)
    more = await eventually(lambda: _enqueue_more(app), timeout=30, what="a producer call")
    # Then the workers carry on: every job completes, none is lost (a job whose completion was
    # cut off by the restart may run twice: delivery is at least once; a claim that committed
    # but whose reply the restart cut off is recovered when its 1 s lease expires)
    st = await batch.wait(timeout=90, poll=0.1)
    assert st.counts == {"completed": 3000}
    await app.wait(more.id, timeout=30)
    runs = Counter(x[1] for x in w.lines() if x[0] == "run")
    assert set(batch.ids) | {more.id} <= set(runs)
    for p in procs:
        assert p.poll() is None, p.tail()
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert await asyncio.to_thread(p.wait, 30) == 0
    await app.close()


async def _enqueue_more(app: Conveyor):  # type: ignore[no-untyped-def]
    try:
        return await app.enqueue("quick_leased", {"n": -1})
    except BackendUnavailable:
        return None
