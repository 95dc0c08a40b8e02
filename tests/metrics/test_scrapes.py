"""Scrapes over real HTTP after a known workload: a worker's ``/metrics`` (its own attempts) and
the exporter's (backend-wide gauges), on every backend."""

from __future__ import annotations

import asyncio

from conveyor import Context, Conveyor, JobState, Permanent, Retry
from conveyor.metrics import BackendCollector, PrometheusHook, serve
from tests.conftest import eventually
from tests.metrics.scrape import Samples, scrape, total, value


async def test_a_worker_serves_exact_counts_of_a_known_workload(app: Conveyor) -> None:
    # Given an app with the Prometheus hook served on a free loopback port
    hook = PrometheusHook()
    app.add_hook(hook)
    server, port = serve(hook.registry, 0)

    @app.task(queue="m", retries=2)
    async def ok(ctx: Context, n: int) -> int:
        ctx.cost(0.5)
        ctx.cost(100, unit="tokens")
        return n

    release = asyncio.Event()

    @app.task(queue="m")
    async def block() -> None:
        await release.wait()

    @app.task(queue="m", retries=2)
    async def boom() -> None:
        raise Permanent("failed on purpose")

    @app.task(queue="m", retries=2)
    async def flaky(ctx: Context) -> str:
        if ctx.attempt == 1:
            raise Retry(after=0.0, reason="first attempt fails on purpose")
        return "ok"

    try:
        # When 5 ok, 2 boom and 3 flaky jobs run to their end
        jobs = [*[await ok.enqueue(n=i) for i in range(5)], *[await boom.enqueue() for _ in "ab"],
                *[await flaky.enqueue() for _ in "abc"]]  # fmt: skip
        async with app.worker(concurrency=4, queues=["m"]):
            for j in jobs:
                await eventually(lambda j=j: _final(app, j.id), what="every job to end")
            # and one job runs while the worker is scraped
            blocker = await block.enqueue()
            running = await eventually(lambda: _scrape_if_active(port), what="an active job")
            release.set()
            await eventually(lambda: _final(app, blocker.id), what="the blocker to end")
        s = await scrape(port)
    finally:
        server.shutdown()
    # Then the scrape has exact counts
    m = {"queue": "m"}
    assert value(s, "conveyor_jobs_total", **m, task="ok", outcome="completed") == 5
    assert value(s, "conveyor_jobs_total", **m, task="boom", outcome="failed") == 2
    assert value(s, "conveyor_jobs_total", **m, task="flaky", outcome="retry") == 3
    assert value(s, "conveyor_jobs_total", **m, task="flaky", outcome="completed") == 3
    assert value(s, "conveyor_retries_total", **m, task="flaky") == 3
    assert value(s, "conveyor_job_duration_seconds_count", **m, task="ok", outcome="completed") == 5
    assert total(s, "conveyor_job_wait_seconds_count", **m) == 14  # one per attempt
    assert value(s, "conveyor_job_wait_seconds_bucket", **m, task="ok", le="+Inf") == 5
    assert value(running, "conveyor_active_jobs", **m) == 1
    assert value(s, "conveyor_job_cost_total", task="ok", unit="usd") == 2.5
    assert value(s, "conveyor_job_cost_total", task="ok", unit="tokens") == 500
    assert value(s, "conveyor_active_jobs", **m) == 0
    assert value(s, "conveyor_jobs_total", **m, task="block", outcome="completed") == 1


async def test_the_exporter_serves_backend_gauges(app: Conveyor) -> None:
    # Given queued jobs on two queues, and a live worker on a third
    @app.task(queue="a")
    async def ta() -> None:
        return None

    @app.task(queue="b")
    async def tb() -> None:
        return None

    @app.task(queue="c")
    async def tc() -> None:
        return None

    for _ in range(3):
        await ta.enqueue()
    await tb.enqueue()
    await app.enqueue("tb", {}, delay=3600)
    collector = BackendCollector()
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(collector)
    server, port = serve(registry, 0)
    try:
        async with app.worker(concurrency=2, queues=["c"]):
            # When the exporter reads the backend once and is scraped
            await collector.refresh(app)
            s = await scrape(port)
    finally:
        server.shutdown()
    # Then the gauges are the backend's counts, the backlog ages and the live workers
    assert value(s, "conveyor_exporter_up") == 1
    assert value(s, "conveyor_queue_jobs", queue="a", state="queued") == 3
    assert value(s, "conveyor_queue_jobs", queue="b", state="queued") == 1
    assert value(s, "conveyor_queue_jobs", queue="b", state="scheduled") == 1
    assert value(s, "conveyor_queue_jobs", queue="a", state="completed") == 0
    assert (value(s, "conveyor_queue_oldest_seconds", queue="a") or 0) > 0
    assert value(s, "conveyor_workers") == 1
    assert value(s, "conveyor_queue_workers", queue="c") == 1


async def _scrape_if_active(port: int) -> Samples | None:
    s = await scrape(port)
    return s if value(s, "conveyor_active_jobs", queue="m") == 1 else None


async def _final(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status in (JobState.COMPLETED, JobState.FAILED)
