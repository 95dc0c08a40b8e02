"""The chaos harness's event reader stops in bounded time: one that does not end when cancelled
is reported as a problem of the run, not a hang until pytest's timeout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.chaos.harness import Reader

from conveyor import Conveyor


async def test_a_reader_that_ignores_its_cancel_is_reported_within_the_bound(
    tmp_path: Path,
) -> None:
    # Given a reader whose task swallows every cancel (as a driver once did mid-call)
    reader = Reader(Conveyor(f"sqlite:///{tmp_path}/q.db"))

    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    reader._task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    # When the harness stops it
    started = time.monotonic()
    await reader.stop(timeout=0.3)
    # Then the stop returns within its bound and the run has a problem saying why
    assert time.monotonic() - started < 2.0
    assert reader.problems([]) == ["event reader: did not stop within 0.3s of being cancelled"]
    released.set()
    await reader._task


async def test_a_reader_stops_when_cancelled(tmp_path: Path) -> None:
    # Given a reader following a store's event log
    app = Conveyor(f"sqlite:///{tmp_path}/q.db")
    await app.open()
    reader = Reader(app)
    reader.start()
    await asyncio.sleep(0.05)
    # When the harness stops it
    await reader.stop()
    # Then it ended with no problem
    assert reader._task is not None and reader._task.done()
    assert reader.problems([]) == []
    await app.close()
