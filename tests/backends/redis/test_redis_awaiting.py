"""Redis-only: where awaiting jobs and their deadlines live (the ``await`` zset, by deadline),
so that the timeout sweep reads only expired entries."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import pytest

from conveyor import AwaitInput, Conveyor, JobState
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from tests.servers import RedisServer


@pytest.fixture
async def app(server: RedisServer) -> AsyncIterator[Conveyor]:
    a = Conveyor(f"{server.url}?prefix=t{uuid.uuid4().hex[:12]}")

    @a.task
    async def review() -> None: ...

    yield a
    await a.close()


async def _park(app: Conveyor, timeout: float | None) -> str:
    job = await app.enqueue("review", {})
    [claimed] = (await app.backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs
    wait = AwaitInput("ok?", timeout=timeout)
    assert await app.backend.finish_jobs("w", [
        Outcome(claimed.id, claimed.token, OutcomeKind.AWAIT, wait=wait)]) == []  # fmt: skip
    return job.id


async def test_the_await_zset_holds_awaiting_jobs_by_deadline(app: Conveyor) -> None:
    # Given two awaiting jobs: one with a deadline, one without
    timed, open_ended = await _park(app, 3600), await _park(app, None)
    client = app.backend._client()  # type: ignore[attr-defined]
    key = app.backend.key("default", "await")  # type: ignore[attr-defined]
    # Then each is in `await` scored by its deadline (+inf: none), and in no active set
    deadline = (await app.get(timed)).await_deadline
    assert await client.zscore(key, timed) == pytest.approx(deadline)
    assert math.isinf(await client.zscore(key, open_ended))
    assert await client.zscore(app.backend.key("default", "active"), timed) is None
    # And a sweep now changes nothing (nothing expired)
    assert await app.backend.expire_awaiting() == []
    # When one is resumed and the other cancelled: then both have left `await`
    await app.resume(timed, "yes")
    await app.cancel(open_ended)
    assert await client.zcard(key) == 0
    assert (await app.get(open_ended)).status is JobState.CANCELLED
    assert (await app.get(timed)).await_deadline is None
