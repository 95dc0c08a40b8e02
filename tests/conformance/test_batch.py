"""Batches from ``enqueue_many``: counts by state, percent done, ETA, waiting."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Batch, BatchStatus, Conveyor
from tests.conftest import eventually


async def test_batch_status_counts_percent_and_eta(app: Conveyor) -> None:
    # Given four jobs in one batch, of which the last two block until released
    release = asyncio.Event()

    @app.task
    async def part(i: int) -> int:
        if i >= 2:
            await release.wait()
        return i

    batch = await app.enqueue_many([("part", {"i": i}) for i in range(4)])
    assert len(batch) == 4
    # When nothing ran yet
    st = await batch.status()
    # Then all are counted queued, 0% done, no ETA
    assert (st.total, st.done, st.percent, st.eta) == (4, 0, 0.0, None)
    assert st.counts == {"queued": 4}
    assert not st.finished
    async with app.worker(concurrency=1):
        # When two are done and the third is running
        st = await eventually(lambda: _done_and_active(batch, 2, 1), what="2 done, 1 active")
        # Then it is 50% done with an ETA
        assert st.percent == pytest.approx(50.0)
        assert st.counts.get("completed") == 2
        assert st.counts.get("queued") == 1
        assert isinstance(st.eta, float) and st.eta > 0
        release.set()
        # When every job ended, wait() returns the final status
        final = await batch.wait(timeout=5)
    assert final.finished
    assert (final.total, final.done, final.percent, final.eta) == (4, 4, 100.0, 0.0)
    assert final.counts == {"completed": 4}
    # And the batch can be looked up again by id
    again = await (await app.batch(batch.id)).status()
    assert again.counts == {"completed": 4}


async def _done_and_active(batch: Batch, done: int, active: int) -> BatchStatus | None:
    st = await batch.status()
    return st if st.done == done and st.counts.get("active") == active else None


async def test_batch_jobs_are_listed_by_batch(app: Conveyor) -> None:
    # Given two batches
    @app.task
    async def t(i: int) -> None:
        return None

    b1 = await app.enqueue_many([("t", {"i": i}) for i in range(3)])
    b2 = await app.enqueue_many([("t", {"i": i}) for i in range(2)])
    # Then each job knows its batch, and listing by batch returns exactly its jobs
    page = await app.list(batch=b1.id)
    assert sorted(j.id for j in page.jobs) == sorted(b1.ids)
    assert all(j.batch == b1.id for j in page.jobs)
    assert len((await app.list(batch=b2.id)).jobs) == 2


async def test_an_empty_batch_is_finished_at_once(app: Conveyor) -> None:
    # Given an empty enqueue_many
    batch = await app.enqueue_many([])
    # Then it has no jobs and waiting returns at once
    st = await batch.wait(timeout=1)
    assert st.total == 0
    assert len(batch) == 0
