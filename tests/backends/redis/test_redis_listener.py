"""The Redis worker's wake-up listener: an idle worker blocks in BZPOPMIN quietly, however the
client's socket timeout compares with the block (redis-py 8 defaults to 5 s, the block's own
length)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import pytest
from redis import asyncio as aioredis

from conveyor import Conveyor
from conveyor.backends.redis import listener
from tests.conftest import eventually
from tests.servers import RedisServer


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    await client.config_resetstat()
    yield client
    await client.aclose()


def _url(server: RedisServer, request: pytest.FixtureRequest, options: str = "") -> str:
    prefix = "t" + re.sub(r"\W", "", request.node.name)[-40:]
    return f"{server.url}?prefix={prefix}{options}"


async def _blocks(admin: aioredis.Redis) -> int:
    """BZPOPMIN calls the server has seen (since the test's CONFIG RESETSTAT)."""
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_bzpopmin", {}).get("calls", 0))


async def _more(admin: aioredis.Redis, than: int) -> bool:
    return await _blocks(admin) > than


async def _idle_through_a_block(app: Conveyor, admin: aioredis.Redis, block: float) -> None:
    """Run an idle worker until its listener's first BZPOPMIN has ended and a second began
    (an idle worker gets no pokes: the second one follows the first block's end)."""

    @app.task
    async def work(n: int) -> int:
        return n

    async with app.worker(concurrency=1):
        await eventually(lambda: _more(admin, 0), timeout=5, what="a first BZPOPMIN")
        await eventually(lambda: _more(admin, 1), timeout=block + 5, what="a second BZPOPMIN")
        # And the worker still picks up a job at once
        job = await app.enqueue("work", {"n": 1})
        assert await app.wait(job.id, timeout=5) == 1


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_idle_listener_outlasts_its_block_with_default_timeouts(
    server: RedisServer,
    admin: aioredis.Redis,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a worker with redis-py's default socket timeout (5 s in redis-py 8, the length of
    # the listener's block)
    app = Conveyor(_url(server, request))
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor"):
            # When it idles through a whole block
            await _idle_through_a_block(app, admin, listener.BLOCK_SECONDS)
    finally:
        await app.close()
    # Then its listener never timed out reading (no warning, no reconnect)
    assert _warnings(caplog) == []


async def test_a_socket_timeout_shorter_than_the_block_is_raised_for_the_listener(
    server: RedisServer,
    admin: aioredis.Redis,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker whose URL sets a socket timeout shorter than the listener's block
    monkeypatch.setattr(listener, "BLOCK_SECONDS", 1.0)
    app = Conveyor(_url(server, request, "&socket_timeout=0.5"))
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor"):
            # When it idles through a whole block
            await _idle_through_a_block(app, admin, listener.BLOCK_SECONDS)
    finally:
        await app.close()
    # Then the listener's own connection waited past the block: no warning, no reconnect
    assert _warnings(caplog) == []
