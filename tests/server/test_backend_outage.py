"""A Redis outage under a running API server: requests answer 503 (JSON) within 2.5 s, health
says unhealthy, and the server serves again once Redis is back; no restart needed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.server import ServerSettings
from tests.conftest import eventually
from tests.server.apps import build_app
from tests.server.harness import ApiServer
from tests.servers import RedisServer

LIMIT = 2.5  # seconds an answer may take while the backend is down


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (the test stops and restarts it), with AOF."""
    server = RedisServer(tmp_path / "redis", appendonly=True)  # the job survives a restart
    yield server
    server.stop()


async def _timed(http: httpx.AsyncClient, method: str, path: str, **kw: object) -> httpx.Response:
    started = time.monotonic()
    r = await http.request(method, path, **kw)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert took < LIMIT, f"{method} {path} took {took:.2f}s"
    return r


async def _answers_503(http: httpx.AsyncClient, job_id: str) -> None:
    r = await _timed(http, "GET", f"/v1/jobs/{job_id}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "backend_unavailable", r.text
    r = await _timed(http, "POST", "/v1/jobs", json={"task": "echo"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "backend_unavailable", r.text
    r = await _timed(http, "GET", "/health")
    assert r.status_code == 503 and r.json() == {"healthy": False}


async def _serves(http: httpx.AsyncClient, job_id: str) -> bool:
    r = await http.get(f"/v1/jobs/{job_id}")
    return r.status_code == 200 and (await http.get("/health")).status_code == 200


@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_a_redis_outage_answers_503_quickly_and_the_server_recovers(
    private_redis: RedisServer, tmp_path: Path, how: str
) -> None:
    # Given an API server on a Redis of its own, and a stored job
    srv = ApiServer(lambda: build_app(private_redis.url),
                    ServerSettings(auth=False, upload_dir=tmp_path / "u")).start()  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            r = await http.post("/v1/jobs", json={"task": "echo", "payload": {"value": 1}})
            job_id = r.json()["job"]["id"]
            # When Redis goes away: stopped (connections refused) or frozen (nothing answers)
            assert private_redis.proc is not None
            if how == "stopped":
                private_redis.stop()
            else:
                private_redis.proc.send_signal(signal.SIGSTOP)
            # Then reads, submits and health answer 503 as JSON within the limit
            await _answers_503(http, job_id)
            # When Redis is back
            if how == "stopped":
                private_redis.start()
            else:
                private_redis.proc.send_signal(signal.SIGCONT)
            # Then the same server serves again, the job intact
            await eventually(lambda: _serves(http, job_id), what="the server serving again")
            assert (await http.get(f"/v1/jobs/{job_id}")).json()["payload"] == {"value": 1}
            r = await http.post("/v1/jobs", json={"task": "echo"})
            assert r.status_code == 202, r.text
    finally:
        srv.stop()
