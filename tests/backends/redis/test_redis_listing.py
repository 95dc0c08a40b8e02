"""Redis-only: a listing gathers its candidates from one sorted set per state, one read each, so a
job that changes state between two of those reads is seen in both; the listing names it once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import Conveyor
from tests.servers import RedisServer


@pytest.fixture
async def app(server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[Conveyor]:
    prefix = re.sub(r"\W", "", request.node.name)[-40:]
    a = Conveyor(f"{server.url}?prefix=t{prefix}")
    a.task(name="noop", queue="q")(lambda: None)
    yield a
    await a.close()


async def test_a_job_cancelled_between_the_state_reads_is_listed_once(app: Conveyor) -> None:
    jobs = [await app.enqueue("noop", {}) for _ in range(3)]
    victim = jobs[1].id
    client = app.backend._client()  # type: ignore[attr-defined]
    zrange = client.zrange

    async def cancel_after_the_ready_read(key: str, *args: Any, **kwargs: Any) -> Any:
        ids = await zrange(key, *args, **kwargs)
        if key.endswith(":ready") and victim in ids:
            await app.cancel(victim)  # moves it to the cancelled set, read after this one
        return ids

    client.zrange = cancel_after_the_ready_read
    page = await app.list(queue="q")
    ids = [j.id for j in page.jobs]
    assert sorted(ids) == sorted(j.id for j in jobs)
    assert [j.status.value for j in page.jobs if j.id == victim] == ["cancelled"]
