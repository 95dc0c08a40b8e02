"""The estimate's stats cache: however many submits arrive at once, a queue's stats are read
from the backend at most once per ``estimate_ttl``."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import Conveyor
from conveyor.server.estimate import Estimator


async def test_concurrent_estimates_share_one_stats_read_per_ttl(store: Conveyor) -> None:
    # Given an estimator over the real backend, counting its stats reads
    reads: list[Any] = []
    real = store.backend.stats

    async def counted(queues: Any = None) -> Any:
        reads.append(queues)
        return await real(queues)

    store.backend.stats = counted  # type: ignore[method-assign]
    est = Estimator(store, ttl=60.0)
    # When 200 submits ask for the estimate of one queue at once, and again later
    await asyncio.gather(*(est.rate("default") for _ in range(200)))
    await est.rate("default")
    # Then the backend was read once; another queue costs its own read
    assert reads == [["default"]]
    await est.rate("slow")
    assert reads == [["default"], ["slow"]]
