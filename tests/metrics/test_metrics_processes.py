"""Three `conveyor worker --metrics-port` processes and one `conveyor metrics` exporter: the
workers' counters sum to the workload, the backend gauges come once (not per worker)."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, JobState, Task
from tests.conftest import eventually
from tests.metrics.scrape import Samples, scrape, total, value
from tests.servers import free_port
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.slow
APP = "tests.metrics.metricsapp:app"


async def test_three_workers_and_one_exporter(
    backend_url: str, worker_processes: WorkerProcesses
) -> None:
    # Given 3 worker processes serving metrics, and one exporter reading every 0.2 s
    env = {"CONVEYOR_URL": backend_url}
    ports = [free_port() for _ in range(3)]
    for p in ports:
        worker_processes.conveyor(APP, "--concurrency", "4", "--metrics-port", str(p), env=env)
    exporter_port = free_port()
    exporter = worker_processes.start("-m", "conveyor", "metrics", "--url", backend_url,
                                      "--port", str(exporter_port), "--interval", "0.2")  # fmt: skip
    exporter.wait_for_output("conveyor metrics: http://")
    from tests.metrics.metricsapp import app as proc_app

    producer = Conveyor(backend_url)
    for name, t in proc_app.tasks.items():
        producer.tasks[name] = Task(producer, t.fn, name, t.options)
    try:
        await eventually(lambda: _workers(producer, 3), timeout=30, what="3 live workers")
        # When 30 ok, 6 boom (fail for good) and 6 flaky (retry once) jobs run to their end
        jobs = [*[await producer.enqueue("ok", {"n": i}) for i in range(30)],
                *[await producer.enqueue("boom", {}) for _ in range(6)],
                *[await producer.enqueue("flaky", {}) for _ in range(6)]]  # fmt: skip
        for j in jobs:
            await eventually(lambda j=j: _final(producer, j.id), timeout=30, what="jobs to end")
        # Then the workers' counters, summed, are the workload
        scrapes = [await scrape(p) for p in ports]
        summed = _sum(scrapes)
        m = {"queue": "m"}
        assert value(summed, "conveyor_jobs_total", **m, task="ok", outcome="completed") == 30
        assert value(summed, "conveyor_jobs_total", **m, task="boom", outcome="failed") == 6
        assert value(summed, "conveyor_jobs_total", **m, task="flaky", outcome="retry") == 6
        assert value(summed, "conveyor_jobs_total", **m, task="flaky", outcome="completed") == 6
        assert value(summed, "conveyor_retries_total", **m, task="flaky") == 6
        assert total(summed, "conveyor_job_duration_seconds_count", **m) == 48
        assert total(summed, "conveyor_job_wait_seconds_count", **m) == 48
        # and no worker serves a backend-wide gauge (N workers would multiply it)
        for s in scrapes:
            assert not any(n.startswith(("conveyor_queue_", "conveyor_workers")) for n, _ in s)

        # and the exporter's gauges are the backend's, once
        def settled(s: Samples) -> bool:
            return value(s, "conveyor_queue_jobs", queue="m", state="completed") == 36

        s = await eventually(lambda: _scrape_if(exporter_port, settled), what="exporter gauges")
        assert value(s, "conveyor_queue_jobs", queue="m", state="failed") == 6
        assert value(s, "conveyor_queue_jobs", queue="m", state="queued") == 0
        assert value(s, "conveyor_queue_oldest_seconds", queue="m") == 0
        assert value(s, "conveyor_workers") == 3
        assert value(s, "conveyor_queue_workers", queue="m") == 3
        assert value(s, "conveyor_exporter_up") == 1
    finally:
        await producer.close()


async def _scrape_if(port: int, ok: object) -> Samples | None:
    s = await scrape(port)
    return s if ok(s) else None  # type: ignore[operator]


def _sum(scrapes: list[Samples]) -> Samples:
    out: Samples = {}
    for s in scrapes:
        for k, v in s.items():
            out[k] = out.get(k, 0.0) + v
    return out


async def _workers(app: Conveyor, n: int) -> bool:
    return len(await app.workers()) == n


async def _final(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status in (JobState.COMPLETED, JobState.FAILED)
