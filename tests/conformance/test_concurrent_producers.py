"""The producer under concurrent use: many calls at once on one event loop (an HTTP server's
requests), and ``app.sync`` from many threads. Calls wait for a connection, never fail for
lack of one."""

from __future__ import annotations

import asyncio

from conveyor import Conveyor, JobState


async def test_a_thousand_concurrent_calls_on_one_loop_all_succeed(app: Conveyor) -> None:
    # Given a stored job
    @app.task
    async def work(n: int) -> int:
        return n

    first = await app.enqueue("work", {"n": 0})
    # When 1,000 reads and 1,000 enqueues run at once on one event loop
    reads = [app.get(first.id) for _ in range(1000)]
    writes = [app.enqueue("work", {"n": i}) for i in range(1, 1001)]
    got = await asyncio.gather(*reads, *writes)
    # Then every call returned its job (none failed for want of a connection)
    assert all(j.id == first.id for j in got[:1000])
    assert sorted(j.payload["n"] for j in got[1000:]) == list(range(1, 1001))
    assert (await app.stats())["default"].counts[JobState.QUEUED.value] == 1001
