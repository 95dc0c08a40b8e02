"""The API's basic contract: submit answers 202 with the job, reading it back works, errors are
JSON with the right status, and the OpenAPI document is served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from conveyor.server import ServerSettings
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer


async def test_submit_answers_202_and_the_job_reads_back(
    serve: Callable[..., ApiServer], tmp_path
) -> None:
    # Given a server without auth (local development)
    srv = serve(ServerSettings(auth=False, upload_dir=tmp_path / "u"))
    async with client(srv) as http:
        # When a job is submitted
        r = await http.post("/v1/jobs", json={"task": "echo", "payload": {"value": 3}})
        # Then it is accepted with its id, and reads back queued
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        got = await http.get(f"/v1/jobs/{job['id']}")
        assert got.status_code == 200
        assert got.json()["status"] == "queued"
        assert got.json()["payload"] == {"value": 3}


async def test_errors_are_json_with_the_right_status(
    serve: Callable[..., ApiServer], tmp_path
) -> None:
    srv = serve(ServerSettings(auth=False, upload_dir=tmp_path / "u"))
    async with client(srv) as http:
        # An unknown task is 422 naming it
        r = await http.post("/v1/jobs", json={"task": "nope"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_task"
        # Malformed JSON is 400
        r = await http.post("/v1/jobs", content=b"{not json",
                            headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
        # An unknown job is 404
        r = await http.get("/v1/jobs/01nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # An unknown route is a JSON 404 too
        r = await http.get("/v1/nothing-here")
        assert r.status_code == 404 and "error" in r.json()


async def test_every_route_but_health_needs_a_key(serve: Callable[..., ApiServer]) -> None:
    srv = serve()
    async with client(srv) as http:
        r = await http.get("/v1/jobs/anything")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await http.get("/v1/jobs/anything", headers={"Authorization": "Bearer cvk_bad_key"})
        assert r.status_code == 401


async def test_openapi_is_served(serve: Callable[..., ApiServer], tmp_path) -> None:
    srv = serve(ServerSettings(auth=False, upload_dir=tmp_path / "u"))
    async with client(srv) as http:
        doc = (await http.get("/openapi.json")).json()
        assert "/v1/jobs" in doc["paths"]


async def test_a_json_body_over_the_request_limit_is_413_declared_or_chunked(
    serve: Callable[..., ApiServer], tmp_path
) -> None:
    # Given a server whose request bodies are limited to 1000 bytes
    srv = serve(ServerSettings(auth=False, upload_dir=tmp_path / "u", max_request_bytes=1000))
    big = b'{"task": "echo", "payload": {"value": "' + b"x" * 5000 + b'"}}'

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    async with client(srv) as http:
        # When the body declares its length, then when it is sent chunked (no length to refuse
        # it by: it is counted as it arrives)
        declared = await http.post("/v1/jobs", content=big,
                                   headers={"content-type": "application/json"})  # fmt: skip
        streamed = await http.post("/v1/jobs", content=chunked(),
                                   headers={"content-type": "application/json"})  # fmt: skip
        # Then both are refused with 413 naming the limit, and no job was stored
        for r in (declared, streamed):
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "too_large"
            assert "1000 bytes" in r.json()["error"]["message"]
        listed = await http.get("/v1/jobs")
        assert listed.json()["jobs"] == []


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    # Given a server allowing 2 requests per second per key, bursts of 3
    srv = serve(ServerSettings(upload_dir=tmp_path / "u", rate_limit=2.0, rate_burst=3))
    hasty, calm = await keys("acme"), await keys("acme")
    async with client(srv, hasty) as h, client(srv, calm) as c:
        # When one key sends 6 requests at once
        answers = [(await h.get("/v1/jobs")).status_code for _ in range(6)]
        # Then its burst passes and the rest are 429 with a Retry-After in whole seconds
        assert answers[:3] == [200, 200, 200] and 429 in answers[3:]
        r = await h.get("/v1/jobs")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        # And another key of the same tenant is not held back by it
        assert (await c.get("/v1/jobs")).status_code == 200


async def test_a_full_queue_answers_429_queue_full_and_stores_nothing(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    # Given a server whose app caps the default queue at 2 waiting jobs, holding 2
    srv = serve(max_queued_default=2)
    async with client(srv, await keys("acme")) as http:
        for _ in range(2):
            assert (await http.post("/v1/jobs", json={"task": "echo"})).status_code == 202
        # When a third job is submitted
        r = await http.post("/v1/jobs", json={"task": "echo"})
        # Then it is refused as queue_full with a Retry-After, and nothing more is stored
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert r.headers["retry-after"] == "1"
        assert len((await http.get("/v1/jobs")).json()["jobs"]) == 2


async def test_a_revoked_key_stops_working_within_the_cache_ttl(
    serve: Callable[..., ApiServer], store: Any, tmp_path: Path
) -> None:
    # Given a working key, verified and cached by the server (ttl 0.2 s)
    srv = serve(ServerSettings(upload_dir=tmp_path / "u", key_cache_ttl=0.2))
    record, key = await store.api_keys.create(tenant="acme")
    async with client(srv, key) as http:
        assert (await http.get("/v1/jobs")).status_code == 200
        # When it is revoked in the backend
        await store.api_keys.revoke(record.id)

        # Then the server refuses it once its cache entry expired (and a read-only key of the
        # same tenant cannot write)
        async def refused() -> bool:
            return (await http.get("/v1/jobs")).status_code == 401

        await eventually(refused, what="the revoked key refused")
    _, ro = await store.api_keys.create(tenant="acme", read_only=True)
    async with client(srv, ro) as http:
        r = await http.post("/v1/jobs", json={"task": "echo"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (await http.get("/v1/jobs")).status_code == 200
