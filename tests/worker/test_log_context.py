"""`conveyor.logs.JobFields` in an app's own logging setup (an embedded worker): the records
of an attempt name its job, in async and sync handlers alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from conveyor import Context, Conveyor
from conveyor.logs import JobFields


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Keep]:
    handler = Keep()
    handler.addFilter(JobFields())
    logger = logging.getLogger("myapp")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


async def test_records_of_an_attempt_carry_its_job(app: Conveyor, kept: Keep) -> None:
    # Given an app logging through its own handler with the JobFields filter
    log = logging.getLogger("myapp")

    @app.task(queue="a")
    async def in_loop(ctx: Context) -> None:
        log.info("async")

    @app.task(queue="b")
    def in_thread(ctx: Context) -> None:
        log.info("sync")

    # When an embedded worker runs one job of each, and the app logs outside any job
    first = await in_loop.enqueue()
    second = await in_thread.enqueue()
    async with app.worker(concurrency=2):
        await app.wait(first.id, timeout=10)
        await app.wait(second.id, timeout=10)
    log.info("outside")
    # Then each record names its job, task, queue and attempt, and the last one no job
    seen = {r.getMessage(): (r.job_id, r.task, r.queue, r.attempt) for r in kept.records}  # type: ignore[attr-defined]
    assert seen == {
        "async": (first.id, "in_loop", "a", 1),
        "sync": (second.id, "in_thread", "b", 1),
        "outside": (None, None, None, None),
    }
