"""Redis connection pools: bounded by ``?pool_size=``, callers wait up to ``?pool_timeout=`` for
a free connection, and a pool that stays busy longer is a clear `BackendUnavailable`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from redis import asyncio as aioredis

from conveyor import BackendUnavailable, ConfigurationError, Conveyor
from tests.servers import RedisServer


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def make_app(
    server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[str], Conveyor]]:
    made: list[Conveyor] = []
    prefix = "t" + re.sub(r"\W", "", request.node.name)[-40:]

    def factory(options: str) -> Conveyor:
        app = Conveyor(f"{server.url}?prefix={prefix}&{options}")
        app.task(_work)
        made.append(app)
        return app

    yield factory
    for app in made:
        await app.close()


async def _work(n: int) -> int:
    return n


async def _connections(admin: aioredis.Redis, name: str) -> int:
    return sum(1 for c in await admin.client_list() if c.get("name") == name)


async def test_pool_size_bounds_the_connections_and_callers_wait(
    make_app: Callable[[str], Conveyor], admin: aioredis.Redis
) -> None:
    # Given an app whose pool holds at most 3 connections
    app = make_app("pool_size=3&client_name=bounded")
    job = await app.enqueue("_work", {"n": 1})
    # When 500 reads run at once
    got = await asyncio.gather(*(app.get(job.id) for _ in range(500)))
    # Then all of them succeed, over no more than 3 connections
    assert {j.id for j in got} == {job.id}
    assert 1 <= await _connections(admin, "bounded") <= 3


async def test_a_pool_busy_past_pool_timeout_is_a_clear_error(
    make_app: Callable[[str], Conveyor], admin: aioredis.Redis
) -> None:
    # Given an app with one connection, waiting at most 0.2 s for it
    app = make_app("pool_size=1&pool_timeout=0.2")
    job = await app.enqueue("_work", {"n": 1})
    # When Redis stalls (CLIENT PAUSE, shorter than the producers' 1.5 s deadline) while one
    # call holds the connection and another waits
    await admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
    held, waiting = await asyncio.gather(app.get(job.id), app.get(job.id), return_exceptions=True)
    # Then the holder gets its answer once Redis resumes, and the waiter a clear error
    assert not isinstance(held, BaseException) and held.id == job.id
    assert isinstance(waiting, BackendUnavailable), waiting
    assert "pool_size=1" in str(waiting) and "pool_timeout=0.2" in str(waiting)


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("pool_size=0", "pool_size='0'"),
        ("pool_size=many", "pool_size='many'"),
        ("pool_timeout=-1", "pool_timeout='-1'"),
        ("max_connections=10", "use pool_size="),
        ("timeout=10", "use pool_timeout="),
    ],
)
def test_pool_options_are_checked(option: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        Conveyor(f"redis://127.0.0.1:6379/0?{option}")
    assert words in str(err.value)
