"""Redis-only checks of backpressure: the reservations of multi-queue enqueues (admit.lua)."""

from __future__ import annotations

import re

import orjson
import pytest
from redis import asyncio as aioredis

from conveyor import Conveyor, QueueFull
from tests.conftest import eventually
from tests.servers import RedisServer


@pytest.fixture
async def app(server: RedisServer, request: pytest.FixtureRequest):
    prefix = re.sub(r"\W", "", request.node.name)[-40:]
    a = Conveyor(f"{server.url}?prefix=t{prefix}")
    yield a
    await a.close()


async def test_a_dead_producers_reservation_holds_room_until_it_expires(
    app: Conveyor, server: RedisServer
) -> None:
    # Given a queue limited to 3 holding 1 job
    app.queue("q", max_queued=3)

    @app.task(queue="q")
    async def work(n: int) -> None:
        return None

    await app.enqueue("work", {"n": 0})
    # When a producer reserves room for 2 jobs (step one) and dies before storing them
    b = app.backend
    items = orjson.dumps([[None, None, "id-1"], [None, None, "id-2"]]).decode()
    assert await b._eval("admit", "q", "dead-token", 3, 0.5, items) == 2  # type: ignore[attr-defined]
    # Then the room stays taken: the queue is full for everyone else
    with pytest.raises(QueueFull) as err:
        await app.enqueue("work", {"n": 1})
    assert err.value.count == 3
    # And once the reservation expires it is dropped and the room comes back
    await eventually(lambda: _fits(app), what="reservation to expire")
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        key = b.key("q")  # type: ignore[attr-defined]
        assert await r.hlen(f"{key}rsv") == 0
        assert await r.zcard(f"{key}rsvx") == 0
        assert int(await r.get(f"{key}rsvn") or 0) == 0
        assert await r.get(f"{key}maxq") == "3"
    finally:
        await r.aclose()


async def _fits(app: Conveyor) -> bool:
    try:
        await app.enqueue("work", {"n": 2})
    except QueueFull:
        return False
    return True
