"""``/v1/workers``, ``/health`` and ``/metrics`` over real HTTP, on SQLite and Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import Conveyor
from conveyor.server import ServerSettings
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


async def test_workers_lists_live_workers_and_their_running_jobs_for_admins_only(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given a server running a worker, and a job that holds a slot
    srv = serve(worker={"concurrency": 3})
    admin = await keys(admin=True)
    job = await store.enqueue("hold", {"seconds": 30}, tenant="acme")
    async with client(srv, admin) as http:
        # When an admin lists the workers while the job runs
        async def running() -> Any:
            ws = (await http.get("/v1/workers")).json()["workers"]
            return ws if ws and job.id in ws[0]["running"] else None

        try:
            workers = await eventually(running)
        finally:
            await store.cancel(job.id)  # never leave the 30 s job holding the server's stop
        # Then the worker is there with where it runs, what it serves and holds
        (w,) = workers
        assert w["pid"] > 0 and w["host"] and w["concurrency"] == 3
        # (the app's queues, and `conveyor`, where an API server's upload cleanups run)
        assert set(w["queues"]) == {"default", "slow", "conveyor"} and w["active"] >= 1
        assert "hold" in w["tasks"] and w["last_seen"] is not None
        await store.cancel(job.id)
    # And a tenant key (even of the job's tenant) is refused, a missing key is 401
    async with client(srv, await keys("acme")) as http:
        r = await http.get("/v1/workers")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    async with client(srv) as http:
        assert (await http.get("/v1/workers")).status_code == 401


async def test_health_answers_everyone_and_details_only_to_admins(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given a server with a worker and a queued job of a queue nothing serves yet
    srv = serve(worker={"concurrency": 1, "queues": ["slow"]})
    await store.enqueue("echo", {"value": 1}, tenant="acme")
    admin = await keys(admin=True)
    # When anyone asks, with no key, a bad key, or a tenant key
    for key in (None, "cvk_not_a_key", await keys("acme")):
        async with client(srv, key) as http:
            r = await http.get("/health")
            # Then the answer is the verdict alone
            assert r.status_code == 200 and r.json() == {"healthy": True}
    async with client(srv, admin) as http:
        # When an admin asks
        async def detailed() -> Any:
            body = (await http.get("/health")).json()
            return body if body.get("workers") else None

        body = await eventually(detailed)
        # Then it sees the backend, the queue counts and the live worker's heartbeat
        assert body["healthy"] is True and body["backend"]["reachable"] is True
        assert body["backend"]["kind"] in ("sqlite", "redis")
        assert body["queues"]["default"]["queued"] == 1
        (w,) = body["workers"]
        assert w["queues"] == ["slow"] and 0 <= w["seconds_since_heartbeat"] < 60


async def test_health_without_auth_gives_the_details(
    serve: Callable[..., ApiServer], tmp_path: Any
) -> None:
    # Given a server without auth (local development: every caller is an admin)
    srv = serve(ServerSettings(auth=False, upload_dir=tmp_path / "u"))
    async with client(srv) as http:
        body = (await http.get("/health")).json()
        # Then health has the details
        assert body["healthy"] is True and "queues" in body and body["workers"] == []


async def test_metrics_serve_backend_gauges_and_the_worker_counters_to_admins(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given a server running a worker, and a job it completed
    srv = serve(worker={"concurrency": 2})
    admin = await keys(admin=True)
    async with client(srv, admin) as http:
        r = await http.post("/v1/jobs", json={"task": "echo", "payload": {"value": 1}})
        job_id = r.json()["job"]["id"]
        await eventually(lambda: _completed(http, job_id))

        # When an admin scrapes /metrics
        async def scraped() -> str | None:
            r = await http.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            done = 'conveyor_queue_jobs{queue="default",state="completed"} 1.0'
            return r.text if done in r.text and "conveyor_jobs_total{" in r.text else None

        text = await eventually(scraped)
        # Then the backend-wide gauges and this process's worker counters are there
        assert "conveyor_exporter_up 1.0" in text
        assert "conveyor_workers 1.0" in text
        assert 'conveyor_jobs_total{outcome="completed",queue="default",task="echo"} 1.0' in text
    # And tenant keys are refused, a missing key is 401
    async with client(srv, await keys("acme")) as http:
        assert (await http.get("/metrics")).status_code == 403
    async with client(srv) as http:
        assert (await http.get("/metrics")).status_code == 401


async def test_metrics_are_also_served_on_their_own_port(
    serve: Callable[..., ApiServer], tmp_path: Any
) -> None:
    # Given a server with a metrics port (0: a free one)
    srv = serve(ServerSettings(upload_dir=tmp_path / "u", metrics_port=0))
    port = srv.api.state.metrics_port
    import httpx

    # When Prometheus scrapes that port, without a key
    async with httpx.AsyncClient() as http:
        r = await eventually(lambda: _scrape(http, f"http://127.0.0.1:{port}/metrics"))
    # Then it gets the backend gauges
    assert "conveyor_exporter_up 1.0" in r


async def _scrape(http: Any, url: str) -> str | None:
    text = (await http.get(url)).text
    return text if "conveyor_exporter_up 1.0" in text else None


async def _completed(http: Any, job_id: str) -> bool:
    return bool((await http.get(f"/v1/jobs/{job_id}")).json()["status"] == "completed")
