"""A short Redis outage under a running worker: one log line when the connection is lost and
one when it is back, per loop family (the worker's loops, its wake-up listener), and no
tracebacks; the worker carries on by itself."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from conveyor import Conveyor
from tests.conftest import eventually
from tests.servers import RedisServer


def _conveyor_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("conveyor") and r.levelno >= logging.WARNING
    ]


def _saying(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in _conveyor_warnings(caplog) if words in r.getMessage()]


async def test_a_redis_restart_logs_lost_once_and_reconnected_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker on Redis (AOF, so the restart keeps the data) that has run a job
    srv = RedisServer(tmp_path / "redis", appendonly=True)
    app = Conveyor(srv.url)

    @app.task
    async def work(n: int) -> int:
        return n

    try:
        with caplog.at_level(logging.INFO, logger="conveyor"):
            async with app.worker(concurrency=2):
                job = await app.enqueue("work", {"n": 1})
                assert await app.wait(job.id, timeout=10) == 1
                # When Redis stops until the worker's loops and its listener have noticed
                await asyncio.to_thread(srv.stop)
                await eventually(
                    lambda: len(_saying(caplog, "lost connection")) >= 2,
                    timeout=20,
                    what="both the worker and its listener noticing",
                )
                # And comes back
                await asyncio.to_thread(srv.start)
                # Then the worker carries on by itself
                job = await app.enqueue("work", {"n": 2})
                assert await app.wait(job.id, timeout=20) == 2
                await eventually(
                    lambda: len(_saying(caplog, "reconnected")) >= 2,
                    timeout=20,
                    what="both reporting they are back",
                )
    finally:
        await app.close()
        srv.stop()
    # And the outage cost one line per state change and component, without tracebacks
    lines = [r.getMessage() for r in _conveyor_warnings(caplog)]
    assert len(_saying(caplog, "lost connection")) == 2, lines
    assert len(_saying(caplog, "reconnected")) == 2, lines
    assert len(lines) == 4, lines
    assert not any(r.exc_info for r in _conveyor_warnings(caplog)), lines
