"""``/v1/jobs`` routes beyond submit-and-read: listing with cursor pages, cancel, retry,
idempotent submit and the submit estimate; each confined to the caller's tenant."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from conveyor import Conveyor
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


async def _submit(http: httpx.AsyncClient, task: str = "echo", **body: Any) -> dict[str, Any]:
    r = await http.post("/v1/jobs", json={"task": task, **body})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


async def _pages(http: httpx.AsyncClient, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = await http.get("/v1/jobs", params=q)
        assert r.status_code == 200, r.text
        pages.append([j["id"] for j in r.json()["jobs"]])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages


async def test_listing_pages_through_a_tenants_jobs_newest_first(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given 7 jobs of tenant acme and 3 of tenant globex
    srv = serve()
    acme, globex = await keys("acme"), await keys("globex")
    async with client(srv, acme) as a, client(srv, globex) as g:
        mine = [(await _submit(a, payload={"value": i}))["job"]["id"] for i in range(7)]
        theirs = [(await _submit(g))["job"]["id"] for _ in range(3)]
        # When acme lists 3 at a time following the cursor
        pages = await _pages(a, limit=3)
        # Then it sees its 7 jobs exactly once, newest first, in pages of at most 3
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [i for p in pages for i in p] == mine[::-1]
        # And globex's listing holds only globex's jobs
        assert [i for p in await _pages(g) for i in p] == theirs[::-1]
        # And a filter by status narrows it
        r = await a.get("/v1/jobs", params={"status": "completed"})
        assert r.status_code == 200 and r.json()["jobs"] == []


async def test_admin_lists_every_tenant_or_the_one_asked(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given jobs of two tenants
    srv = serve()
    acme, admin = await keys("acme"), await keys(admin=True)
    async with client(srv, acme) as a, client(srv, admin) as root:
        ours = (await _submit(a))["job"]["id"]
        other = (await _submit(root, tenant="globex"))["job"]["id"]
        # When the admin lists, then it sees both; with ?tenant= only that tenant's
        everyone = (await root.get("/v1/jobs")).json()["jobs"]
        assert {j["id"] for j in everyone} == {ours, other}
        only = (await root.get("/v1/jobs", params={"tenant": "globex"})).json()["jobs"]
        assert [j["id"] for j in only] == [other]
        # And a tenant key asking for another tenant is refused, for its own is served
        r = await a.get("/v1/jobs", params={"tenant": "globex"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await a.get("/v1/jobs", params={"tenant": "acme"})
        assert [j["id"] for j in r.json()["jobs"]] == [ours]


async def test_bad_listing_arguments_are_refused_naming_them(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as http:
        for params, word in (
            ({"status": "sleeping"}, "status"),
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"cursor": "9" * 30}, "cursor"),
            ({"cursor": "é"}, "cursor"),
        ):
            # When a listing argument is invalid
            r = await http.get("/v1/jobs", params=params)
            # Then it is a 4xx JSON error naming the argument, never a 500
            assert r.status_code in (400, 422), (params, r.text)
            assert word in r.json()["error"]["message"], (params, r.text)
    async with client(srv) as anonymous:
        assert (await anonymous.get("/v1/jobs")).status_code == 401


async def test_cancel_answers_the_cancelled_job_and_409_once_it_ended(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given a queued job and a job that completed (the server runs a worker on "default")
    srv = serve(worker={"concurrency": 2, "queues": ["default"]})
    async with client(srv, await keys("acme")) as http:
        held = (await _submit(http, "hold"))["job"]["id"]
        done = (await _submit(http, payload={"value": 1}))["job"]["id"]

        async def completed() -> bool:
            return (await http.get(f"/v1/jobs/{done}")).json()["status"] == "completed"

        await eventually(completed, what="the echo job completed")
        # When the queued one is cancelled, then it answers 200 with the cancelled job
        r = await http.delete(f"/v1/jobs/{held}")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == held and r.json()["status"] == "cancelled"
        # And cancelling it again is idempotent
        assert (await http.delete(f"/v1/jobs/{held}")).json()["status"] == "cancelled"
        # And the completed one cannot be cancelled: 409 naming its state
        r = await http.delete(f"/v1/jobs/{done}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        # And an unknown job is 404
        assert (await http.delete("/v1/jobs/0000nothing")).status_code == 404


async def test_retry_requeues_a_cancelled_job_409_from_queued_429_when_full(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given the "slow" queue limited to one waiting job, and a job of it cancelled
    srv = serve()
    srv.conveyor.queue("slow", max_queued=1)
    async with client(srv, await keys("acme")) as http:
        first = (await _submit(http, "hold"))["job"]["id"]
        await http.delete(f"/v1/jobs/{first}")
        # When it is retried, then it is queued again with fresh attempts
        r = await http.post(f"/v1/jobs/{first}/retry")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "queued" and r.json()["attempt"] == 0
        # And retrying a queued job is a 409
        r = await http.post(f"/v1/jobs/{first}/retry")
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        # And with the queue full, a retry is 429 queue_full and changes nothing
        await http.delete(f"/v1/jobs/{first}")
        await _submit(http, "hold")
        r = await http.post(f"/v1/jobs/{first}/retry")
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert (await http.get(f"/v1/jobs/{first}")).json()["status"] == "cancelled"


async def test_another_tenants_job_is_404_to_read_cancel_and_retry(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given a job of tenant acme
    srv = serve()
    async with client(srv, await keys("acme")) as a, client(srv, await keys("globex")) as g:
        job = (await _submit(a, "hold"))["job"]["id"]
        # When tenant globex reads, cancels or retries it, then each answers 404
        for r in (
            await g.get(f"/v1/jobs/{job}"),
            await g.delete(f"/v1/jobs/{job}"),
            await g.post(f"/v1/jobs/{job}/retry"),
        ):
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "not_found"
        # And the job is untouched
        assert (await a.get(f"/v1/jobs/{job}")).json()["status"] == "queued"


async def test_read_only_keys_read_but_cannot_cancel_or_retry(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as rw, \
            client(srv, await keys("acme", read_only=True)) as ro:  # fmt: skip
        job = (await _submit(rw, "hold"))["job"]["id"]
        assert (await ro.get("/v1/jobs")).status_code == 200
        for r in (await ro.delete(f"/v1/jobs/{job}"), await ro.post(f"/v1/jobs/{job}/retry"),
                  await ro.post("/v1/jobs", json={"task": "echo"})):  # fmt: skip
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (await rw.get(f"/v1/jobs/{job}")).json()["status"] == "queued"
    async with client(srv) as anonymous:
        assert (await anonymous.delete(f"/v1/jobs/{job}")).status_code == 401
        assert (await anonymous.post(f"/v1/jobs/{job}/retry")).status_code == 401


async def test_the_same_idempotency_key_answers_the_same_job_per_tenant(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as a, client(srv, await keys("globex")) as g:
        # When the same Idempotency-Key is sent twice
        h = {"Idempotency-Key": "order-17"}
        one = (await a.post("/v1/jobs", json={"task": "echo"}, headers=h)).json()
        two = (await a.post("/v1/jobs", json={"task": "echo"}, headers=h)).json()
        # Then the second answers the first job, created false
        assert one["created"] is True and two["created"] is False
        assert two["job"]["id"] == one["job"]["id"]
        # And another tenant's same key is its own job
        theirs = (await g.post("/v1/jobs", json={"task": "echo"}, headers=h)).json()
        assert theirs["created"] is True and theirs["job"]["id"] != one["job"]["id"]


async def test_estimate_is_null_until_measured_then_starts_after_submit(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    # Given a server without a worker: nothing serves the queue, so no estimate
    srv = serve()
    admin = await keys(admin=True)
    async with client(srv, await keys("acme")) as http, client(srv, admin) as root:
        assert (await _submit(http))["estimate"] is None
        # When a worker serves the queue and some jobs ran
        async with store.worker(concurrency=3, queues=["default"]):
            ids = [(await _submit(http, payload={"value": i}))["job"]["id"] for i in range(5)]

            async def all_done() -> bool:
                got = [(await http.get(f"/v1/jobs/{i}")).json()["status"] for i in ids]
                return all(s == "completed" for s in got)

            await eventually(all_done, what="the jobs completed")
            before = time.time()

            async def estimated() -> Any:
                return (await _submit(http))["estimate"]  # stats are cached for ~1 s

            est = await eventually(estimated, what="an estimate")
            full = (await _submit(root, tenant="acme"))["estimate"]
        # Then the estimate starts no earlier than the submit and ends after it starts
        assert est["start_at"] >= before - 0.05
        assert est["finish_at"] >= est["start_at"]
        # And the figures behind it, which sum up every tenant's work, are an admin's only
        assert est["capacity"] is None and est["run_seconds"] is None and est["ahead"] is None
        assert full["capacity"] == 3 and full["run_seconds"] >= 0 and full["ahead"] >= 0
