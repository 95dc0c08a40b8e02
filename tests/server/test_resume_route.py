"""``POST /v1/jobs/{id}/resume`` (human in the loop) and `conveyor.Client.resume`: 200 with the
job once, 409 after, 404 for another tenant, 403 for a read-only key, 422 for a bad decision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import Client, JobState, JobStateError
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


async def _awaiting(http: Any, what: str = "the draft") -> str:
    """Submit ``approve`` and wait until it awaits its decision; its id."""
    r = await http.post("/v1/jobs", json={"task": "approve", "payload": {"what": what}})
    assert r.status_code == 202, r.text
    job_id = str(r.json()["job"]["id"])

    async def parked() -> dict[str, Any] | None:
        job = (await http.get(f"/v1/jobs/{job_id}")).json()
        return job if job["status"] == "awaiting" else None

    await eventually(parked, what="the job awaiting its decision")
    return job_id


async def test_resume_answers_the_job_once_then_409(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given tenant acme's job awaiting a decision, served with a worker
    srv = serve(worker={"concurrency": 2, "queues": ["default"]})
    acme, globex = await keys("acme"), await keys("globex")
    acme_ro = await keys("acme", read_only=True)
    async with client(srv, acme) as a, client(srv, globex) as g, client(srv, acme_ro) as ro:
        job_id = await _awaiting(a)
        shown = (await a.get(f"/v1/jobs/{job_id}")).json()
        # Then the job JSON shows its prompt, deadline (none) and policy
        assert shown["prompt"] == {"question": "approve the draft?"}
        assert (shown["await_deadline"], shown["on_timeout"], shown["resumes"]) == (
            None, "fail", 0
        )  # fmt: skip
        # When another tenant, a read-only key, or a too large decision try to resume it
        r = await g.post(f"/v1/jobs/{job_id}/resume", json={"data": "yes"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        r = await ro.post(f"/v1/jobs/{job_id}/resume", json={"data": "yes"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        r = await a.post(f"/v1/jobs/{job_id}/resume", json={"data": "x" * 70_000})
        assert r.status_code == 422, r.text
        r = await a.post(f"/v1/jobs/{job_id}/resume", json={"data": 1, "other": 2})
        assert r.status_code == 422, r.text
        assert (await a.get(f"/v1/jobs/{job_id}")).json()["status"] == "awaiting"
        # When acme resumes it with a decision
        r = await a.post(f"/v1/jobs/{job_id}/resume", json={"data": {"approved": True}})
        # Then 200 with the job, queued with the decision; the handler gets it
        assert r.status_code == 200, r.text
        assert r.json()["status"] in ("queued", "active", "completed")
        assert (r.json()["input"], r.json()["resumes"]) == ({"approved": True}, 1)

        async def done() -> dict[str, Any] | None:
            job = (await a.get(f"/v1/jobs/{job_id}")).json()
            return job if job["status"] == "completed" else None

        assert (await eventually(done))["result"] == {"decision": {"approved": True}}
        # And a second resume is a conflict naming the state
        r = await a.post(f"/v1/jobs/{job_id}/resume", json={"data": {"approved": False}})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conflict"
        assert r.json()["error"]["state"] == "completed"
        # And a resume without a body resumes with no data (here: a conflict again)
        assert (await a.post(f"/v1/jobs/{job_id}/resume")).status_code == 409


async def test_the_client_resumes_and_lists_awaiting_jobs(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given an awaiting job of tenant acme
    srv = serve(worker={"concurrency": 2, "queues": ["default"]})
    key = await keys("acme")
    async with client(srv, key) as a:
        job_id = await _awaiting(a, "the plan")
    async with Client(srv.url, key) as c:
        # When the client lists awaiting jobs, then it finds it with its prompt
        page = await c.list(status="awaiting")
        assert [(j.id, j.prompt) for j in page.jobs] == [
            (job_id, {"question": "approve the plan?"})
        ]
        # When it resumes it
        job = await c.resume(job_id, "ship it")
        assert job.status is not JobState.AWAITING and job.input == "ship it"
        # Then the job completes with the decision; resuming again is a JobStateError
        assert await c.wait(job_id, timeout=10) == {"decision": "ship it"}
        try:
            await c.resume(job_id, "again")
        except JobStateError as exc:
            assert exc.state == "completed"
        else:
            raise AssertionError("a second resume was accepted")


async def test_a_fan_in_parent_shows_its_children_and_refuses_a_resume(
    serve: Callable[..., ApiServer], keys: Callable[..., Any]
) -> None:
    # Given tenant acme's parent waiting for 2 children that no worker runs (queue slow)
    srv = serve(worker={"concurrency": 2, "queues": ["default"]})
    acme, globex = await keys("acme"), await keys("globex")
    async with client(srv, acme) as a, client(srv, globex) as g:
        r = await a.post("/v1/jobs", json={"task": "fan", "payload": {"n": 2}})
        assert r.status_code == 202, r.text
        job_id = str(r.json()["job"]["id"])

        async def parked() -> dict[str, Any] | None:
            job = (await a.get(f"/v1/jobs/{job_id}")).json()
            return job if job["status"] == "awaiting" and job["fanin"] else None

        shown = await eventually(parked, what="the parent awaiting its children")
        # Then its JSON shows the children's ids and state, and its progress
        assert shown["fanin"] == {"policy": "fail_parent", "cancel_siblings": True, "total": 2,
                                  "settled": 0, "failed": 0, "waiting": True}  # fmt: skip
        assert len(shown["next_jobs"]) == 2
        assert shown["progress"]["message"] == "0 of 2 children done"
        kid = shown["next_jobs"][0]
        # And a child names its parent, for its tenant only
        await eventually(lambda: _status(a, kid), what="the child stored")
        assert (await a.get(f"/v1/jobs/{kid}")).json()["parent"] == job_id
        assert (await g.get(f"/v1/jobs/{kid}")).status_code == 404
        # When someone resumes the parent by hand: 409, its children resume it
        r = await a.post(f"/v1/jobs/{job_id}/resume", json={"data": "go"})
        assert r.status_code == 409 and r.json()["error"]["state"] == "awaiting children", r.text


async def _status(http: Any, job_id: str) -> str | None:
    r = await http.get(f"/v1/jobs/{job_id}")
    return str(r.json()["status"]) if r.status_code == 200 else None
