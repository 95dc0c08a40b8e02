"""``POST /v1/jobs/batch`` and ``GET /v1/batches/{id}``: all-or-none submit, the batch's
progress, Idempotency-Key replays, and tenant isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import Conveyor
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


def _items(n: int, task: str = "echo") -> list[dict[str, Any]]:
    return [{"task": task, "payload": {"value": i}} for i in range(n)]


async def test_a_batch_is_accepted_whole_and_its_progress_reads_back(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as http:
        # When a batch of 4 jobs is submitted
        r = await http.post("/v1/jobs/batch", json={"jobs": _items(4), "priority": "high"})
        # Then it is accepted with its id, total and the job ids in item order
        assert r.status_code == 202, r.text
        body = r.json()
        batch, ids = body["batch"], body["jobs"]
        assert batch["total"] == 4 and batch["created"] == 4 and len(ids) == 4
        assert r.headers["location"] == f"/v1/batches/{batch['id']}"
        jobs = [(await http.get(f"/v1/jobs/{i}")).json() for i in ids]
        assert [j["payload"]["value"] for j in jobs] == [0, 1, 2, 3]
        assert {j["tenant"] for j in jobs} == {"acme"} and {j["priority"] for j in jobs} == {10}
        # And its status counts them queued, none done
        st = (await http.get(f"/v1/batches/{batch['id']}")).json()
        assert st["total"] == 4 and st["counts"]["queued"] == 4
        assert st["done"] == 0 and st["percent"] == 0
        # When a worker runs them, then the batch reads back done
        async with store.worker(concurrency=4, queues=["default"]):

            async def finished() -> Any:
                got = (await http.get(f"/v1/batches/{batch['id']}")).json()
                return got if got["done"] == 4 else None

            st = await eventually(finished, what="the batch finished")
        assert st["percent"] == 100 and st["counts"]["completed"] == 4 and st["eta"] == 0


async def test_one_bad_item_refuses_the_whole_batch_naming_it(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as http:
        # When the second item names an unknown task, or the third has a bad priority
        for items, where in (
            ([*_items(1), {"task": "nope"}, *_items(1)], "jobs[1]"),
            ([*_items(2), {"task": "echo", "priority": "loudest"}], "jobs[2]"),
        ):
            r = await http.post("/v1/jobs/batch", json={"jobs": items})
            # Then the request is refused naming the item, and nothing was stored
            assert r.status_code == 422, r.text
            assert r.json()["error"]["message"].startswith(where), r.text
            assert r.json()["error"]["field"].startswith(where), r.text
        assert (await http.get("/v1/jobs")).json()["jobs"] == []
        # And an empty batch, a batch of another tenant, and unknown fields are refused
        r = await http.post("/v1/jobs/batch", json={"jobs": []})
        assert r.status_code == 422 and "jobs" in r.json()["error"]["message"]
        r = await http.post("/v1/jobs/batch", json={"jobs": _items(1), "tenant": "globex"})
        assert r.status_code == 403
        r = await http.post("/v1/jobs/batch", json={"jobs": [{"task": "echo", "tenant": "x"}]})
        assert r.status_code == 422 and "tenant" in r.json()["error"]["message"]


async def test_the_same_idempotency_key_answers_the_same_batch(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as http:
        h = {"Idempotency-Key": "import-2024-05"}
        # When the same batch is sent twice with one Idempotency-Key
        one = (await http.post("/v1/jobs/batch", json={"jobs": _items(3)}, headers=h)).json()
        two = await http.post("/v1/jobs/batch", json={"jobs": _items(3)}, headers=h)
        # Then the second stores nothing and answers the first batch and its jobs
        assert two.status_code == 202, two.text
        assert two.json()["batch"] == {**one["batch"], "created": 0}
        assert two.json()["jobs"] == one["jobs"]
        assert len((await http.get("/v1/jobs")).json()["jobs"]) == 3
        # And each item carries the derived key <key>:<index>
        first = (await http.get(f"/v1/jobs/{one['jobs'][2]}")).json()
        assert first["idempotency_key"] == "import-2024-05:2"
        # And an item's own key cannot be combined with the header
        r = await http.post("/v1/jobs/batch", json={"jobs": _items(1)},
                            headers={"Idempotency-Key": ""})  # fmt: skip
        assert r.status_code == 422 and "Idempotency-Key" in r.json()["error"]["message"]
        r = await http.post("/v1/jobs/batch", json={"jobs": _items(1)},
                            headers={"Idempotency-Key": "k" * 600})  # fmt: skip
        assert r.status_code == 422 and "Idempotency-Key" in r.json()["error"]["message"]
        items = [{"task": "echo", "idempotency_key": "mine"}]
        r = await http.post("/v1/jobs/batch", json={"jobs": items}, headers=h)
        assert r.status_code == 422 and "Idempotency-Key" in r.json()["error"]["message"]


async def test_another_tenants_batch_is_404_and_read_only_keys_cannot_submit(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    acme, globex, admin = await keys("acme"), await keys("globex"), await keys(admin=True)
    async with client(srv, acme) as a, client(srv, globex) as g, client(srv, admin) as root:
        # Given a batch of tenant acme
        batch = (await a.post("/v1/jobs/batch", json={"jobs": _items(2)})).json()["batch"]
        # When globex reads it, then it is 404 exactly like a missing batch
        r = await g.get(f"/v1/batches/{batch['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        missing = await g.get("/v1/batches/0000none")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        # And globex's listing by that batch is empty
        r = await g.get("/v1/jobs", params={"batch": batch["id"]})
        assert r.json()["jobs"] == []
        # And the admin sees it, and may submit a batch for a tenant
        assert (await root.get(f"/v1/batches/{batch['id']}")).json()["total"] == 2
        r = await root.post("/v1/jobs/batch", json={"jobs": _items(1), "tenant": "globex"})
        gid = r.json()["batch"]["id"]
        assert (await g.get(f"/v1/batches/{gid}")).json()["total"] == 1
    async with client(srv, await keys("acme", read_only=True)) as ro:
        r = await ro.post("/v1/jobs/batch", json={"jobs": _items(1)})
        assert r.status_code == 403
        assert (await ro.get(f"/v1/batches/{batch['id']}")).status_code == 200
    async with client(srv) as anonymous:
        assert (await anonymous.post("/v1/jobs/batch", json={"jobs": _items(1)})).status_code == 401
        assert (await anonymous.get(f"/v1/batches/{batch['id']}")).status_code == 401


async def test_a_batch_with_callbacks_takes_members_and_fires_once(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as http, client(srv, await keys("other")) as eve:
        # Given a batch of 2 jobs with both callbacks (one with options)
        r = await http.post("/v1/jobs/batch", json={
            "jobs": _items(2), "on_complete": "batch_done",
            "on_success": {"task": "batch_done", "priority": "high"}, "batch_ttl": 3600,
        })  # fmt: skip
        assert r.status_code == 202, r.text
        batch = r.json()["batch"]["id"]
        st = (await http.get(f"/v1/batches/{batch}")).json()
        assert [c["state"] for c in st["record"]["callbacks"]] == ["waiting", "waiting"]
        assert st["record"]["fired"] is False
        # When a job is added, by its tenant and by another one
        r = await http.post(f"/v1/batches/{batch}/jobs", json={"jobs": _items(1)})
        assert r.status_code == 202, r.text
        assert (
            await eve.post(f"/v1/batches/{batch}/jobs", json={"jobs": _items(1)})
        ).status_code == 404
        assert (await eve.get(f"/v1/batches/{batch}")).status_code == 404
        # Then the batch counts 3 members
        assert (await http.get(f"/v1/batches/{batch}")).json()["total"] == 3
        # When a worker runs everything
        async with store.worker(concurrency=4, queues=["default"]):

            async def fired() -> Any:
                got = (await http.get(f"/v1/batches/{batch}")).json()
                ids = [c["job_id"] for c in got["record"]["callbacks"]]
                done = [(await http.get(f"/v1/jobs/{i}")).json() for i in ids]
                ok = got["record"]["fired"] and all(j.get("status") == "completed" for j in done)
                return (got, done) if ok else None

            st, done = await eventually(fired, what="both callbacks to complete")
        # Then both callbacks ran once with the counts, as the tenant's jobs
        assert [c["state"] for c in st["record"]["callbacks"]] == ["enqueued", "enqueued"]
        assert {j["tenant"] for j in done} == {"acme"}
        assert done[0]["result"] == {"batch": batch, "total": 3,
                                     "counts": {"completed": 3, "failed": 0, "cancelled": 0}}  # fmt: skip
        assert done[1]["priority"] == 10
        # And the fired batch takes no more jobs
        r = await http.post(f"/v1/batches/{batch}/jobs", json={"jobs": _items(1)})
        assert r.status_code == 409 and r.json()["error"]["code"] == "batch_closed"


async def test_a_callback_that_cannot_take_the_counts_is_refused(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    srv = serve()
    async with client(srv, await keys("acme")) as http:
        # When the callback task does not accept the callback payload, or is unknown
        for cb in ("echo", "nope", {"task": "batch_done", "colour": "red"}):
            r = await http.post("/v1/jobs/batch", json={"jobs": _items(1), "on_complete": cb})
            # Then the request is refused, naming the problem, and nothing is stored
            assert r.status_code == 422, r.text
        page = (await http.get("/v1/jobs")).json()
        assert page["jobs"] == []
