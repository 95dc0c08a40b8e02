"""The tenant-isolation matrix over every route of the HTTP API (issue 13).

The routes come from the served ``/openapi.json``; `ROUTES` says, for each (method, path), how
tenant A calls it on its own objects (``own``), what tenant B sends naming A's objects and must
get back (``b``), and what the admin key must find in A's answer (``sees``). A route served
without an entry fails `test_every_served_route_has_a_matrix_entry`, naming it: a new route
gets its isolation cases before it ships.

B must get 404 for A's objects, exactly like for missing ones (same body but the id); 403 where
only admins may go or where it names A's tenant; and from lists, stats and streams a 200 that
holds none of A's ids, names, data or counts. B's bulk actions with broad filters leave A's jobs
as they were. A read-only key of A gets 403 on every write route, no key gets 401 on every
route but ``/health``, and the admin key reads A's objects."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor
from tests.server.conftest import client
from tests.server.harness import ApiServer
from tests.server.tenancy import (
    FILE,
    KEYS,
    PRIVATE_QUEUE,
    PRIVATE_TASK,
    SECRET,
    A,
    B,
    Call,
    Expect,
    World,
    all_jobs,
    build_world,
    check,
    jobs_of,
    leaked,
    own_counts,
    settled,
)

NF, NO = Expect.NOT_FOUND, Expect.FORBIDDEN
OLDEST = {"since": "oldest", "follow": "false"}
NOTHING = {"matched": 0, "changed": 0}


@dataclass(frozen=True)
class Route:
    own: Callable[[World], Call]  # A's own call on its objects
    b: Callable[[World], list[Call]]  # B's calls naming A's objects, and what B must get
    sees: Callable[[World], str | None] = lambda w: None  # in the admin's answer to ``own``


def each_job(method: str, url: str, expect: Expect = NF) -> Callable[[World], list[Call]]:
    return lambda w: [Call(method, url.format(job=j), expect) for j in w.a_jobs]


def upload_form(options: dict[str, Any] | None = None) -> dict[str, str]:
    return {"task": "digest", **({"options": json.dumps(options)} if options else {})}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/v1/jobs/{job_id}"): Route(
        own=lambda w: Call("GET", f"/v1/jobs/{w.done}"),
        b=each_job("GET", "/v1/jobs/{job}"),
        sees=lambda w: SECRET,
    ),
    ("DELETE", "/v1/jobs/{job_id}"): Route(
        own=lambda w: Call("DELETE", f"/v1/jobs/{w.queued}"),
        b=each_job("DELETE", "/v1/jobs/{job}"),  # 404, not 409, for A's ended jobs too
    ),
    ("POST", "/v1/jobs/{job_id}/retry"): Route(
        own=lambda w: Call("POST", f"/v1/jobs/{w.failed}/retry"),
        b=each_job("POST", "/v1/jobs/{job}/retry"),
    ),
    ("POST", "/v1/jobs/{job_id}/resume"): Route(
        own=lambda w: Call("POST", f"/v1/jobs/{w.awaiting}/resume", json={"data": "yes"}),
        b=lambda w: [  # 404, not 409, for A's jobs that are not awaiting too
            *each_job("POST", "/v1/jobs/{job}/resume")(w),
            Call("POST", f"/v1/jobs/{w.awaiting}/resume", NF, json={"data": "yes"}),
        ],
    ),
    ("GET", "/v1/jobs"): Route(
        own=lambda w: Call("GET", "/v1/jobs"),
        b=lambda w: [
            Call("GET", "/v1/jobs", shows=w.b_queued),
            *(
                Call("GET", "/v1/jobs", params=p, echoes=(w.batch,))
                for p in (
                    {"batch": w.batch},
                    {"queue": PRIVATE_QUEUE},
                    {"task": PRIVATE_TASK},
                    {"status": "failed"},
                    {"status": "cancelled"},
                    {"queue": "slow"},
                )
            ),
            Call("GET", "/v1/jobs", params={"cursor": w.a_cursor}),
            Call("GET", "/v1/jobs", NO, params={"tenant": A}),
        ],
        sees=lambda w: w.private,
    ),
    ("POST", "/v1/jobs"): Route(
        own=lambda w: Call("POST", "/v1/jobs", json={"task": "echo"}),
        b=lambda w: [
            Call("POST", "/v1/jobs", NO, json={"task": "echo", "tenant": A}),
            # A's idempotency key from B: a new job of B, never A's job
            Call(
                "POST",
                "/v1/jobs",
                status=202,
                json={"task": "echo", "payload": {"value": 1}},
                headers={"Idempotency-Key": KEYS["job"]},
                echoes=(KEYS["job"],),
            ),
            # A's upload named in B's job: accepted, but the job never reads the file
            Call(
                "POST",
                "/v1/jobs",
                status=202,
                echoes=(w.upload, A),
                json={"task": "digest", "payload": {"file": w.upload_ref}},
            ),
            Call(
                "POST",
                "/v1/jobs",
                status=202,
                echoes=(w.upload, A),
                json={
                    "task": "conveyor.upload_cleanup",
                    "payload": {"upload": w.upload, "tenant": A, "ttl": 0},
                },
            ),
        ],
    ),
    ("POST", "/v1/jobs/batch"): Route(
        own=lambda w: Call("POST", "/v1/jobs/batch", json={"jobs": [{"task": "echo"}]}),
        b=lambda w: [
            Call("POST", "/v1/jobs/batch", NO, json={"jobs": [{"task": "echo"}], "tenant": A}),
            Call(
                "POST",
                "/v1/jobs/batch",
                status=202,
                headers={"Idempotency-Key": KEYS["batch"]},
                json={"jobs": [{"task": "echo"}, {"task": "hold"}]},
            ),
        ],
    ),
    ("POST", "/v1/batches/{batch_id}/jobs"): Route(
        own=lambda w: Call(
            "POST", f"/v1/batches/{w.batch}/jobs", json={"jobs": [{"task": "echo"}]}
        ),
        b=lambda w: [
            Call("POST", f"/v1/batches/{w.batch}/jobs", NF, json={"jobs": [{"task": "echo"}]}),
            Call(
                "POST",
                f"/v1/batches/{w.batch}/jobs",
                NO,
                json={"jobs": [{"task": "echo"}], "tenant": A},
            ),
        ],
    ),
    ("GET", "/v1/workflows/{workflow_id}"): Route(
        # every job of A is a workflow of one step (or the first of one): B gets 404 for each
        own=lambda w: Call("GET", f"/v1/workflows/{w.done}"),
        b=each_job("GET", "/v1/workflows/{job}"),
        sees=lambda w: w.done,
    ),
    ("GET", "/v1/batches/{batch_id}/link"): Route(
        # a read-only link to the dashboard's batch page, within the caller's tenant
        own=lambda w: Call("GET", f"/v1/batches/{w.batch}/link"),
        b=lambda w: [
            Call("GET", f"/v1/batches/{w.batch}/link", NF),
            # a batch with jobs of both: B's link is to its own jobs of it (the id is echoed)
            Call("GET", f"/v1/batches/{w.mixed}/link", echoes=(w.mixed,)),
        ],
        sees=lambda w: w.batch,
    ),
    ("GET", "/v1/batches/{batch_id}"): Route(
        own=lambda w: Call("GET", f"/v1/batches/{w.batch}"),
        b=lambda w: [
            Call("GET", f"/v1/batches/{w.batch}", NF),
            # a batch with jobs of both: B counts its own job only
            Call(
                "GET",
                f"/v1/batches/{w.mixed}",
                echoes=(w.mixed,),
                body={
                    "id": w.mixed,
                    "total": 1,
                    "counts": {"queued": 1},
                    "done": 0,
                    "percent": 0.0,
                    "eta": None,
                    "record": None,
                },
            ),
        ],
        sees=lambda w: w.batch,
    ),
    ("POST", "/v1/jobs/cancel"): Route(
        own=lambda w: Call("POST", "/v1/jobs/cancel", json={"queue": "slow"}),
        b=lambda w: [
            *(
                Call("POST", "/v1/jobs/cancel", json=f, body=NOTHING, echoes=(w.batch,))
                for f in ({"batch": w.batch}, {"queue": PRIVATE_QUEUE}, {"task": PRIVATE_TASK})
            ),
            *(
                Call("POST", "/v1/jobs/cancel", json=f)
                for f in (
                    {"queue": "slow"},
                    {"queue": "default"},
                    {"status": "queued"},
                    {"task": "hold"},
                )
            ),
            Call("POST", "/v1/jobs/cancel", NO, json={"tenant": A, "queue": "slow"}),
        ],
    ),
    ("POST", "/v1/jobs/retry"): Route(
        own=lambda w: Call("POST", "/v1/jobs/retry", json={"status": "failed"}),
        b=lambda w: [
            *(
                Call("POST", "/v1/jobs/retry", json=f, body=NOTHING, echoes=(w.batch,))
                for f in ({"batch": w.batch}, {"queue": PRIVATE_QUEUE}, {"task": PRIVATE_TASK})
            ),
            *(
                Call("POST", "/v1/jobs/retry", json=f)
                for f in (
                    {"status": "failed"},
                    {"status": "cancelled"},
                    {"queue": "default"},
                    {"queue": "slow"},
                    {"task": "boom"},
                )
            ),
            Call("POST", "/v1/jobs/retry", NO, json={"tenant": A, "status": "failed"}),
        ],
    ),
    ("GET", "/v1/events"): Route(
        own=lambda w: Call("GET", "/v1/events", params=OLDEST),
        b=lambda w: [
            Call("GET", "/v1/events", params=OLDEST, shows=w.b_done),
            Call("GET", "/v1/events", NO, params={**OLDEST, "tenant": A}),
            Call("GET", "/v1/events", params={**OLDEST, "queue": "default"}, shows=w.b_done),
            Call("GET", "/v1/events", params={**OLDEST, "queue": PRIVATE_QUEUE}),
            Call("GET", "/v1/events", params={**OLDEST, "since": w.a_event}, shows=w.b_done),
            Call("GET", "/v1/events", NF, params={**OLDEST, "batch": w.batch}),
            *(Call("GET", "/v1/events", NF, params={**OLDEST, "job": j}) for j in w.a_jobs),
        ],
        sees=lambda w: w.private,
    ),
    ("POST", "/v1/uploads"): Route(
        own=lambda w: Call("POST", "/v1/uploads", status=202, form=upload_form(), upload=b"x"),
        b=lambda w: [
            Call("POST", "/v1/uploads", NO, form=upload_form({"tenant": A}), upload=b"b"),
            Call(
                "POST",
                "/v1/uploads",
                status=202,
                form=upload_form(),
                upload=b"b's file",
                headers={"Idempotency-Key": KEYS["upload"]},
                echoes=(KEYS["upload"],),
            ),
            # B's own job naming A's upload, replayed as an upload: never A's upload
            Call(
                "POST",
                "/v1/jobs",
                status=202,
                echoes=(w.upload, A, "b-ref-key"),
                headers={"Idempotency-Key": "b-ref-key"},
                json={"task": "digest", "payload": {"file": w.upload_ref}},
            ),
            Call(
                "POST",
                "/v1/uploads",
                status=202,
                form=upload_form(),
                upload=b"b2",
                headers={"Idempotency-Key": "b-ref-key"},
                echoes=(w.upload, A, "b-ref-key"),
            ),
        ],
    ),
    ("GET", "/v1/uploads/{upload_id}"): Route(
        own=lambda w: Call("GET", f"/v1/uploads/{w.upload}"),
        b=lambda w: [
            Call("GET", f"/v1/uploads/{w.upload}", e, params=p)
            for e, p in ((NF, None), (NO, {"tenant": A}))
        ],
        sees=lambda w: w.upload_job,
    ),
    ("GET", "/v1/uploads/{upload_id}/content"): Route(
        own=lambda w: Call("GET", f"/v1/uploads/{w.upload}/content"),
        b=lambda w: [
            Call("GET", f"/v1/uploads/{w.upload}/content", e, params=p)
            for e, p in ((NF, None), (NO, {"tenant": A}))
        ],
        sees=lambda w: SECRET,
    ),
    ("GET", "/v1/stats"): Route(
        own=lambda w: Call("GET", "/v1/stats"),
        b=lambda w: [Call("GET", "/v1/stats"), Call("GET", "/v1/stats", NO, params={"tenant": A})],
        sees=lambda w: PRIVATE_QUEUE,
    ),
    ("GET", "/v1/queues"): Route(
        own=lambda w: Call("GET", "/v1/queues"),
        b=lambda w: [
            Call("GET", "/v1/queues"),
            Call("GET", "/v1/queues", NO, params={"tenant": A}),
        ],
        sees=lambda w: PRIVATE_QUEUE,
    ),
    ("GET", "/v1/queues/{queue}"): Route(
        own=lambda w: Call("GET", f"/v1/queues/{PRIVATE_QUEUE}"),
        b=lambda w: [
            Call("GET", f"/v1/queues/{PRIVATE_QUEUE}", NF),
            Call("GET", f"/v1/queues/{PRIVATE_QUEUE}", NO, params={"tenant": A}),
            Call("GET", "/v1/queues/default", NO, params={"tenant": A}),
            Call("GET", "/v1/queues/slow"),
        ],
        sees=lambda w: PRIVATE_QUEUE,
    ),
    ("POST", "/v1/queues/{queue}/pause"): Route(
        own=lambda w: Call("POST", "/v1/queues/slow/pause"),
        b=lambda w: [
            Call("POST", f"/v1/queues/{q}/pause", NO) for q in ("slow", "default", PRIVATE_QUEUE)
        ],
    ),
    ("POST", "/v1/queues/{queue}/resume"): Route(
        own=lambda w: Call("POST", "/v1/queues/slow/resume"),
        b=lambda w: [
            Call("POST", f"/v1/queues/{q}/resume", NO) for q in ("slow", "default", PRIVATE_QUEUE)
        ],
    ),
    ("GET", "/v1/workers"): Route(
        own=lambda w: Call("GET", "/v1/workers"),
        b=lambda w: [Call("GET", "/v1/workers", NO)],
    ),
    ("GET", "/health"): Route(
        own=lambda w: Call("GET", "/health"),
        b=lambda w: [Call("GET", "/health", body={"healthy": True})],
        sees=lambda w: PRIVATE_QUEUE,
    ),
    ("GET", "/metrics"): Route(
        own=lambda w: Call("GET", "/metrics"),
        b=lambda w: [Call("GET", "/metrics", NO)],
        sees=lambda w: PRIVATE_QUEUE,
    ),
}


async def served_routes(srv: ApiServer) -> list[tuple[str, str]]:
    async with client(srv) as http:
        doc = (await http.get("/openapi.json")).json()
    return [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops]


@pytest.fixture
async def world(serve: Callable[..., ApiServer], store: Conveyor, keys: Any) -> World:
    srv = serve(worker={"concurrency": 4, "queues": ["default"]})
    return await build_world(srv, store, keys)


async def test_every_served_route_has_a_matrix_entry(serve: Callable[..., ApiServer]) -> None:
    # Given the routes the server documents at /openapi.json
    served = await served_routes(serve())
    # Then each has a matrix entry, and each entry is a served route
    missing = sorted(set(served) - set(ROUTES))
    assert not missing, f"routes without a tenant-isolation matrix entry: {missing}"
    assert not sorted(set(ROUTES) - set(served)), "matrix entries of routes no longer served"


async def test_tenant_b_gets_nothing_of_tenant_a_on_any_route(world: World) -> None:
    # Given tenant A's objects of every kind, and a few of B's own
    w = world
    served = await served_routes(w.srv)
    reads = [k for k in served if k[0] == "GET"]
    writes = [k for k in served if k[0] != "GET"]
    a_before = await all_jobs(w.store, A)
    b_jobs = await jobs_of(w.store, B)
    async with client(w.srv, w.key_b) as b:
        # When B calls every read route naming A's objects: 404 like missing, or nothing of A
        for route in reads:
            for call in ROUTES[route].b(w):
                await check(b, call, w)
        # And B's stats and queues count B's own jobs only
        mine = own_counts(b_jobs)
        for view in [*(await b.get("/v1/stats")).json()["queues"].values(),
                     *(await b.get("/v1/queues")).json()["queues"]]:  # fmt: skip
            counts = {s: n for s, n in view["counts"].items() if n}
            assert counts == mine.get(view["queue"], {}), (view, mine)
        # When B calls every write route naming A's objects, bulk actions with broad filters too
        for route in writes:
            for call in ROUTES[route].b(w):
                await check(b, call, w)
        await settled(w.store, B)
        # Then B's stream from the oldest event never carries A's jobs, after all that either
        r = await b.get("/v1/events", params=OLDEST)
        assert r.status_code == 200 and w.b_failed in r.text
        assert not leaked(r.text, [*w.a_jobs, w.batch, SECRET, PRIVATE_QUEUE])
    # Then A's jobs are exactly as they were, no queue is paused, A's file is still there
    assert await all_jobs(w.store, A) == a_before
    assert await w.store.paused_queues() == set()
    async with client(w.srv, w.key_a) as a:
        assert (await a.get(f"/v1/uploads/{w.upload}/content")).content == FILE
    # And none of B's jobs (the ones naming A's upload among them) read A's data
    for job in await jobs_of(w.store, B):
        assert SECRET not in json.dumps([job.result, job.error], default=str), job.id


async def test_a_read_only_key_gets_403_on_every_write_route(world: World, tmp_path: Path) -> None:
    # Given tenant A's objects and a read-only key of A
    w = world
    writes = [k for k in await served_routes(w.srv) if k[0] != "GET"]
    a_before = await all_jobs(w.store, A)
    files_before = sorted((tmp_path / "uploads").rglob("*"))
    async with client(w.srv, w.key_a_read_only) as ro:
        # When A's read-only key makes each write A's own key could make
        for route in writes:
            call = ROUTES[route].own(w)
            r = await call.request(ro)
            # Then it is 403 and nothing changed
            assert r.status_code == 403, f"{route}: {call} -> {r.status_code} {r.text[:200]}"
            assert r.json()["error"]["code"] == "forbidden", route
        # And it still reads A's jobs
        assert (await ro.get(f"/v1/jobs/{w.done}")).json()["result"] == SECRET
    assert await all_jobs(w.store, A) == a_before
    assert await w.store.paused_queues() == set()
    assert sorted((tmp_path / "uploads").rglob("*")) == files_before


async def test_no_key_gets_401_on_every_route_but_health(world: World) -> None:
    # Given tenant A's objects
    w = world
    a_before = await all_jobs(w.store, A)
    async with client(w.srv) as anonymous:
        for route in await served_routes(w.srv):
            # When each route is called without a key, naming A's objects
            call = ROUTES[route].own(w)
            r = await call.request(anonymous)
            where = f"{route}: {call} -> {r.status_code} {r.text[:200]}"
            # Then it is 401, but /health, which tells only whether the server is healthy
            if route == ("GET", "/health"):
                assert r.status_code == 200 and r.json() == {"healthy": True}, where
                continue
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", where
            assert not leaked(r.text, w.a_names), where
    assert await all_jobs(w.store, A) == a_before


async def test_the_admin_key_reads_tenant_a_objects(world: World) -> None:
    # Given tenant A's objects and an admin key
    w = world
    async with client(w.srv, w.key_admin) as admin:
        for route in await served_routes(w.srv):
            if route[0] != "GET":
                continue
            # When the admin reads each of A's objects
            call = ROUTES[route].own(w)
            r = await call.request(admin)
            # Then it gets it
            where = f"{route}: {call} -> {r.status_code} {r.text[:200]}"
            assert r.status_code == 200, where
            sees = ROUTES[route].sees(w)
            assert sees is None or sees in r.text, f"{where}: {sees} is missing"
        # And with ?tenant= it reads A's alone
        r = await admin.get("/v1/jobs", params={"tenant": A, "limit": 1000})
        assert {j["id"] for j in r.json()["jobs"]} == set(await all_jobs(w.store, A))


async def test_a_tenant_key_naming_another_tenant_gets_403_on_every_route_that_takes_one(
    world: World,
) -> None:
    # Given the GET routes whose OpenAPI lists a ``tenant`` query parameter
    w = world
    async with client(w.srv) as http:
        doc = (await http.get("/openapi.json")).json()
    takes_tenant = [
        ("GET", path)
        for path, ops in doc["paths"].items()
        if any(
            p["name"] == "tenant" and p["in"] == "query"
            for p in ops.get("get", {}).get("parameters", [])
        )
    ]
    assert takes_tenant, "no route takes ?tenant= (the test would prove nothing)"
    async with client(w.srv, w.key_b) as b:
        for route in takes_tenant:
            # When tenant B's key calls it naming tenant A
            call = ROUTES[route].own(w)
            params = {**(call.params or {}), "tenant": A}
            r = await b.request(call.method, call.url, params=params)
            # Then it is refused as forbidden, not silently answered for B's own tenant
            where = f"{route} -> {r.status_code} {r.text[:200]}"
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", where
            assert not leaked(r.text, w.a_names), where
