"""Redis-only checks of claims: a worker's claims show in the log in the order it made them,
whatever the nodes' clocks say; a claim of one queue is one script call, a claim of several is
a peek per queue and a claim per queue that has a share; an idle worker's blocking pop
outlasts the socket timeout."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from redis import asyncio as aioredis

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams
from conveyor.backends.redis.listener import BLOCK_SECONDS
from tests.servers import RedisServer


@pytest.fixture
async def app(server: RedisServer, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    prefix = re.sub(r"\W", "", request.node.name)[-40:]
    a = Conveyor(f"{server.url}?prefix=c{prefix}")

    for q in ("qa", "qb"):

        @a.task(name=f"t_{q}", queue=q)
        async def t() -> None:
            return None

    yield a
    await a.close()


async def _evalsha_calls(r: Any) -> int:
    return int((await r.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))


async def test_claims_across_queues_show_in_claim_order_when_a_clock_runs_ahead(
    app: Conveyor, server: RedisServer
) -> None:
    # Given a job in each of two queues, and qa's stream ids 10 s in the future, as on a
    # Cluster node whose clock runs ahead of qb's
    a = await app.enqueue("t_qa")
    b = await app.enqueue("t_qb")
    backend: Any = app.backend
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    ahead = int(time.time() * 1000) + 10_000
    await r.execute_command("XSETID", backend.key("qa", "events"), f"{ahead}-0")
    await r.aclose()
    # When one worker claims qa's job, then qb's
    (got_a,) = (await backend.claim_jobs(ClaimParams(["qa"], 1, "w1"))).jobs
    (got_b,) = (await backend.claim_jobs(ClaimParams(["qb"], 1, "w1"))).jobs
    assert (got_a.id, got_b.id) == (a.id, b.id)
    # Then the log shows qa's start before qb's: the second claim's event sorts after the first
    started = [e.job_id async for e in app.events(since="0", follow=False) if e.type == "started"]
    assert started == [a.id, b.id]


async def test_one_queue_costs_one_script_call_several_a_peek_each_and_their_claims(
    app: Conveyor, server: RedisServer
) -> None:
    # Given two jobs in qa and none in qb (and the scripts loaded: a first use loads them)
    await app.open()
    backend: Any = app.backend
    await backend.claim_jobs(ClaimParams(["qa", "qb"], 5, "w0"))
    await app.enqueue_many([("t_qa", None), ("t_qa", None)])
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    # When a worker serving qa claims one job
    before = await _evalsha_calls(r)
    assert len((await backend.claim_jobs(ClaimParams(["qa"], 1, "w1"))).jobs) == 1
    one = await _evalsha_calls(r) - before
    # And a worker serving qa and qb claims the other
    before = await _evalsha_calls(r)
    assert len((await backend.claim_jobs(ClaimParams(["qa", "qb"], 5, "w1"))).jobs) == 1
    two = await _evalsha_calls(r) - before
    await r.aclose()
    # Then the first ran only the claim script; the second a peek on each queue and one claim
    # (qb had nothing to give)
    assert (one, two) == (1, 3)


async def test_an_idle_listener_blocks_longer_than_the_socket_timeout_without_reconnecting(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker with nothing to do, blocked on its queue's marker for longer than one
    # blocking pop (BLOCK_SECONDS, 5 s; redis-py's default socket timeout is 5 s too)
    done: list[str] = []

    @app.task(name="rec", queue="qa")
    async def rec(tag: str) -> None:
        done.append(tag)

    async with app.worker(concurrency=1, queues=["qa"], poll_interval=30.0):
        await asyncio.sleep(BLOCK_SECONDS + 1.0)  # the scenario is this much idleness
        # When a job arrives
        await app.enqueue("rec", {"tag": "late"})
        deadline = time.monotonic() + 5.0
        while not done and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    # Then it ran, and the listener never timed out reading nor reconnected
    assert done == ["late"]
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]
