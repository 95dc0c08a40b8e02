"""200 clients at once, each on its own connection, submitting jobs and polling them until a
worker in the server process has completed them: no error status, no refused or dropped
connection, every job completed exactly as submitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conveyor.server import ServerSettings
from tests.server.conftest import client
from tests.server.harness import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CLIENTS = 200
JOBS_EACH = 3
DEADLINE = 120.0


async def _one_client(http: httpx.AsyncClient, n: int) -> list[Any]:
    ids = []
    for k in range(JOBS_EACH):
        r = await http.post("/v1/jobs", json={"task": "echo", "payload": {"value": [n, k]}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["job"]["id"])
    results = []
    deadline = time.monotonic() + DEADLINE
    for job_id in ids:
        while True:
            r = await http.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            job = r.json()
            if job["status"] == "completed":
                results.append(job["result"])
                break
            assert job["status"] in ("queued", "active"), job
            assert time.monotonic() < deadline, f"job {job_id} not completed in time"
            await asyncio.sleep(0.05)  # the poll interval of a client, not a wait for a state
    return results


async def test_200_concurrent_clients_submit_and_poll_without_error(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], tmp_path: Any
) -> None:
    # Given a server with a worker in its process, and 10 tenants' keys shared by 200 clients
    srv = serve(
        ServerSettings(upload_dir=tmp_path / "u", rate_limit=None),
        worker={"concurrency": 50},
    )
    tenant_keys = [await keys(f"t{i}") for i in range(10)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [client(srv, tenant_keys[n % 10], limits=limits) for n in range(CLIENTS)]
    try:
        # When every client submits 3 jobs and polls each until it completes, all at once
        results = await asyncio.gather(*(_one_client(c, n) for n, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    # Then every job completed with its own payload's value, and no request failed
    assert results == [[[n, k] for k in range(JOBS_EACH)] for n in range(CLIENTS)]
