"""Bulk ``POST /v1/jobs/cancel`` and ``POST /v1/jobs/retry`` by filter: they act on every
matching job of the caller's tenant and never on another tenant's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from conveyor import Conveyor
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


async def _statuses(http: httpx.AsyncClient, **params: Any) -> Counter[str]:
    seen: Counter[str] = Counter()
    cursor = None
    while True:
        q = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/jobs", params=q)).json()
        seen.update(j["status"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


async def test_bulk_cancel_clears_a_tenants_queue_and_leaves_another_tenants_jobs(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    # Given 500 queued jobs of tenant acme and 20 of tenant globex in the same queue
    srv = serve()
    await store.enqueue_many([("echo", {"value": i}) for i in range(500)], tenant="acme")
    await store.enqueue_many([("echo", {"value": i}) for i in range(20)], tenant="globex")
    async with client(srv, await keys("acme")) as a, client(srv, await keys("globex")) as g:
        # When acme cancels its queue
        r = await a.post("/v1/jobs/cancel", json={"queue": "default"})
        # Then all 500 of its jobs matched and were cancelled
        assert r.status_code == 200, r.text
        assert r.json() == {"matched": 500, "changed": 500}
        assert await _statuses(a) == {"cancelled": 500}
        # And globex's 20 jobs are untouched
        assert await _statuses(g) == {"queued": 20}
        # And a second run finds nothing left to cancel
        r = await a.post("/v1/jobs/cancel", json={"queue": "default"})
        assert r.json() == {"matched": 0, "changed": 0}


async def test_bulk_retry_requeues_the_matching_failed_jobs_only(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given 3 jobs of tenant acme that failed and 2 that completed (a worker serves "default")
    srv = serve(worker={"concurrency": 4, "queues": ["default"]})
    async with client(srv, await keys("acme")) as a, client(srv, await keys("globex")) as g:
        for i in range(3):
            await a.post("/v1/jobs", json={"task": "boom", "payload": {"message": f"no {i}"}})
        for i in range(2):
            await a.post("/v1/jobs", json={"task": "echo", "payload": {"value": i}})
        # And one failed job of tenant globex
        await g.post("/v1/jobs", json={"task": "boom"})

        async def settled() -> bool:
            return await _statuses(a) == {"failed": 3, "completed": 2} and (
                await _statuses(g) == {"failed": 1}
            )

        await eventually(settled, what="the jobs ended")
        before = {j["id"]: j["finished_at"]
                  for j in (await a.get("/v1/jobs", params={"task": "boom"})).json()["jobs"]}  # fmt: skip
        # When acme retries its failed boom jobs
        r = await a.post("/v1/jobs/retry", json={"status": "failed", "task": "boom"})
        # Then the 3 matched and were requeued: each runs (and fails) once more
        assert r.status_code == 200, r.text
        assert r.json() == {"matched": 3, "changed": 3}

        async def ran_again() -> bool:
            jobs = (await a.get("/v1/jobs", params={"task": "boom"})).json()["jobs"]
            return all(j["status"] == "failed" and j["finished_at"] > before[j["id"]]
                       for j in jobs)  # fmt: skip

        await eventually(ran_again, what="the retried jobs ran again")
        assert await _statuses(a) == {"failed": 3, "completed": 2}
        # And globex's failed job was not retried
        theirs = (await g.get("/v1/jobs")).json()["jobs"]
        assert [(j["status"], j["attempt"]) for j in theirs] == [("failed", 1)]


async def test_bulk_retry_of_a_batch_requeues_its_cancelled_jobs(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given a batch of 5 jobs, cancelled in bulk, and one other cancelled job
    srv = serve()
    async with client(srv, await keys("acme")) as a:
        items = [{"task": "hold"} for _ in range(5)]
        batch = (await a.post("/v1/jobs/batch", json={"jobs": items})).json()["batch"]["id"]
        other = (await a.post("/v1/jobs", json={"task": "hold"})).json()["job"]["id"]
        r = await a.post("/v1/jobs/cancel", json={"batch": batch})
        assert r.json() == {"matched": 5, "changed": 5}
        await a.delete(f"/v1/jobs/{other}")
        # When the batch is retried in bulk (no status: failed and cancelled ones)
        r = await a.post("/v1/jobs/retry", json={"batch": batch})
        # Then its 5 jobs are queued again and the other job stays cancelled
        assert r.json() == {"matched": 5, "changed": 5}
        assert await _statuses(a, batch=batch) == {"queued": 5}
        assert (await a.get(f"/v1/jobs/{other}")).json()["status"] == "cancelled"


async def test_admin_bulk_cancel_reaches_every_tenant_or_the_one_named(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    # Given queued jobs of two tenants
    srv = serve()
    await store.enqueue_many([("echo", {}) for _ in range(3)], tenant="acme")
    await store.enqueue_many([("echo", {}) for _ in range(4)], tenant="globex")
    async with client(srv, await keys(admin=True)) as root:
        # When the admin cancels globex's jobs only, then acme's stay queued
        r = await root.post("/v1/jobs/cancel", json={"tenant": "globex"})
        assert r.json() == {"matched": 4, "changed": 4}
        assert await _statuses(root, tenant="acme") == {"queued": 3}
        # When the admin clears the queue, then every tenant's remaining job is cancelled
        r = await root.post("/v1/jobs/cancel", json={"queue": "default", "status": "queued"})
        assert r.json() == {"matched": 3, "changed": 3}
        assert await _statuses(root) == {"cancelled": 7}


async def test_bulk_filters_are_checked_and_keys_confined(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    srv = serve()
    await store.enqueue_many([("echo", {}) for _ in range(2)], tenant="globex")
    async with client(srv, await keys("acme")) as a:
        # An empty filter is refused: acting on everything must be asked for
        r = await a.post("/v1/jobs/cancel", json={})
        assert r.status_code == 422 and "at least one filter" in r.json()["error"]["message"]
        # A status the action cannot apply to is refused naming it
        r = await a.post("/v1/jobs/cancel", json={"status": "completed"})
        assert r.status_code == 422 and "completed" in r.json()["error"]["message"]
        r = await a.post("/v1/jobs/retry", json={"status": "queued"})
        assert r.status_code == 422 and "queued" in r.json()["error"]["message"]
        # Unknown statuses and fields are 422
        r = await a.post("/v1/jobs/retry", json={"status": "sleeping"})
        assert r.status_code == 422 and "status" in r.json()["error"]["message"]
        r = await a.post("/v1/jobs/cancel", json={"queue": "default", "everything": True})
        assert r.status_code == 422 and "everything" in r.json()["error"]["message"]
        # A tenant key naming another tenant is refused, and globex's jobs stay queued
        r = await a.post("/v1/jobs/cancel", json={"tenant": "globex"})
        assert r.status_code == 403
    async with client(srv, await keys("acme", read_only=True)) as ro:
        for path in ("/v1/jobs/cancel", "/v1/jobs/retry"):
            assert (await ro.post(path, json={"queue": "default"})).status_code == 403
    async with client(srv) as anonymous:
        assert (await anonymous.post("/v1/jobs/cancel", json={"queue": "x"})).status_code == 401
    page = await store.list(tenant="globex")
    assert [j.status.value for j in page.jobs] == ["queued", "queued"]
