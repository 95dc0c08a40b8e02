"""``/v1/stats``, ``/v1/queues[/{q}]`` and pause/resume over real HTTP, on SQLite and Redis:
admin keys see every tenant's figures, tenant keys only their own jobs' counts and queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import Conveyor
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


async def _seed(store: Conveyor) -> None:
    """Two jobs of acme and one of globex on 'default'; one globex job on a queue 'side' that
    only the test's app knows (the server's app has no task on it)."""
    store.declare("side-task", queue="side")
    await store.enqueue("echo", {"value": 1}, tenant="acme")
    await store.enqueue("echo", {"value": 2}, tenant="acme")
    await store.enqueue("echo", {"value": 3}, tenant="globex")
    await store.enqueue("side-task", {"x": 1}, tenant="globex")


async def test_stats_show_admins_every_tenant_and_tenants_only_their_own_jobs(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given jobs of two tenants, one of them on a queue the served app does not register
    await _seed(store)
    srv = serve()
    admin, acme, initech = await keys(admin=True), await keys("acme"), await keys("initech")
    async with client(srv, admin) as http:
        # When an admin reads the stats
        body = (await http.get("/v1/stats")).json()
        # Then it sees every tenant's jobs and every queue, with the full figures
        assert body["tenant"] is None and body["complete"] is True
        assert body["queues"]["default"]["counts"]["queued"] == 3
        assert body["queues"]["side"]["counts"]["queued"] == 1
        assert body["queues"]["side"]["registered"] is False
        assert body["queues"]["default"]["concurrency"] == 0  # no live worker
        # And ?tenant= confines an admin to one tenant's counts
        one = (await http.get("/v1/stats", params={"tenant": "acme"})).json()
        assert one["tenant"] == "acme" and one["queues"]["default"]["counts"]["queued"] == 2
    async with client(srv, acme) as http:
        # When tenant acme asks for another tenant's, then it is refused
        r = await http.get("/v1/stats", params={"tenant": "globex"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        # When tenant acme reads them
        for params in ({}, {"tenant": "acme"}):
            body = (await http.get("/v1/stats", params=params)).json()
            # Then it sees only its own counts, no aggregate figures, and not globex's queue
            assert body["tenant"] == "acme"
            assert body["queues"]["default"]["counts"]["queued"] == 2
            assert body["queues"]["default"]["waiting"] == 2
            assert body["queues"]["default"]["throughput_per_s"] is None
            assert body["queues"]["default"]["workers"] is None
            assert "side" not in body["queues"]
    async with client(srv, initech) as http:
        # And a tenant without jobs sees the app's queues, all zero
        body = (await http.get("/v1/stats")).json()
        # (and `conveyor`, where the server's upload cleanups run)
        assert set(body["queues"]) == {"conveyor", "default", "slow"}
        assert sum(body["queues"]["default"]["counts"].values()) == 0


async def test_queues_list_and_detail_answer_404_for_unknown_queues(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given seeded jobs and a server
    await _seed(store)
    srv = serve()
    admin, acme = await keys(admin=True), await keys("acme")
    async with client(srv, admin) as http:
        # When an admin lists the queues
        listed = (await http.get("/v1/queues")).json()["queues"]
        # Then the app's queues and the queue seen in stats are there
        assert [q["queue"] for q in listed] == ["conveyor", "default", "side", "slow"]
        # And one queue reads with its limits, backpressure and paused flag
        r = await http.get("/v1/queues/default")
        assert r.status_code == 200, r.text
        q = r.json()
        assert q["counts"]["queued"] == 3 and q["paused"] is False and q["full"] is False
        assert q["limits"] == [] and q["max_queued"] is None and q["registered"] is True
        assert (await http.get("/v1/queues/side")).json()["counts"]["queued"] == 1
        # And an unknown queue is 404, a malformed name 422 naming it
        r = await http.get("/v1/queues/never-seen")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await http.get("/v1/queues/" + "q" * 300)
        assert r.status_code == 422 and "queue" in r.json()["error"]["message"]
    async with client(srv, acme) as http:
        # When tenant acme reads queues: globex's private queue does not exist for it
        assert (await http.get("/v1/queues/side")).status_code == 404
        assert [q["queue"] for q in (await http.get("/v1/queues")).json()["queues"]] == [
            "conveyor",
            "default",
            "slow",
        ]
        q = (await http.get("/v1/queues/default")).json()
        assert q["counts"]["queued"] == 2 and q["limits"] is None
    async with client(srv) as http:
        # And without a key every one of these is 401
        for path in ("/v1/stats", "/v1/queues", "/v1/queues/default"):
            assert (await http.get(path)).status_code == 401


async def test_pausing_a_queue_stops_claims_until_it_is_resumed(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given a server running a worker, and an admin key
    srv = serve(worker={"concurrency": 2})
    admin = await keys(admin=True)
    async with client(srv, admin) as http:
        # When the admin pauses 'default'
        r = await http.post("/v1/queues/default/pause")
        # Then the answer is the queue, paused, and the backend holds the flag
        assert r.status_code == 200, r.text
        assert r.json()["queue"] == "default" and r.json()["paused"] is True
        assert await store.paused_queues() == {"default"}
        # And pausing again is harmless
        assert (await http.post("/v1/queues/default/pause")).json()["paused"] is True
        # And a job submitted meanwhile is accepted but not claimed: a job submitted after it
        # on the other queue runs, so the worker is alive and has looked
        held = (await http.post("/v1/jobs", json={"task": "echo"})).json()["job"]["id"]
        other = await http.post("/v1/jobs", json={"task": "hold", "payload": {"seconds": 0}})
        await eventually(lambda: _status(http, other.json()["job"]["id"], "completed"))
        assert (await http.get(f"/v1/jobs/{held}")).json()["status"] == "queued"
        # When it is resumed
        r = await http.post("/v1/queues/default/resume")
        assert r.status_code == 200 and r.json()["paused"] is False
        # Then the held job runs
        await eventually(lambda: _status(http, held, "completed"))
        assert await store.paused_queues() == set()
        # And an unknown queue cannot be paused
        r = await http.post("/v1/queues/never-seen/pause")
        assert r.status_code == 404


async def test_only_admin_writers_pause_queues(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Callable[..., Any]
) -> None:
    # Given a server and keys of every kind
    srv = serve()
    for key, status in (
        (await keys(admin=True, read_only=True), 403),
        (await keys("acme"), 403),
        (await keys("acme", read_only=True), 403),
        (None, 401),
    ):
        async with client(srv, key) as http:
            # When a caller that is not an admin writer pauses or resumes
            for action in ("pause", "resume"):
                r = await http.post(f"/v1/queues/default/{action}")
                # Then it is refused, and nothing changed
                assert r.status_code == status, (key, action, r.text)
                assert "error" in r.json()
    assert await store.paused_queues() == set()


async def _status(http: Any, job_id: str, status: str) -> bool:
    return bool((await http.get(f"/v1/jobs/{job_id}")).json()["status"] == status)
