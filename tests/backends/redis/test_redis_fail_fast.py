"""Producers fail fast when Redis is gone: every producer call raises `BackendUnavailable`
within 2 s, whether the server is dead (connection refused) or frozen (SIGSTOP: the kernel
still accepts connections, nothing ever replies), and works again once it is back."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import BackendUnavailable, ConfigurationError, Conveyor
from tests.servers import RedisServer

BOUND = 2.0


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis", appendonly=True)
    yield s
    if s.proc is not None:
        s.proc.send_signal(signal.SIGCONT)
    s.stop()


def _app(url: str) -> Conveyor:
    app = Conveyor(url)

    @app.task
    async def work(n: int) -> int:
        return n

    return app


def _calls(app: Conveyor, job_id: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "enqueue": lambda: app.enqueue("work", {"n": 1}),
        "enqueue_many": lambda: app.enqueue_many([("work", {"n": i}) for i in range(100)]),
        "get": lambda: app.get(job_id),
        "list": lambda: app.list(),
        "cancel": lambda: app.cancel(job_id),
        "retry": lambda: app.retry(job_id),
        "stats": lambda: app.stats(),
        "workers": lambda: app.workers(),
    }


async def _each_fails_fast(app: Conveyor, job_id: str, words: str) -> None:
    for name, call in _calls(app, job_id).items():
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as err:
            await call()
        took = time.monotonic() - started
        assert took < BOUND, f"{name} took {took:.2f}s"
        assert words in str(err.value), (name, str(err.value))


async def test_a_killed_redis_fails_every_producer_call_fast(srv: RedisServer) -> None:
    # Given an app that has stored a job
    app = _app(srv.url)
    try:
        job = await app.enqueue("work", {"n": 1})
        # When Redis is killed
        srv.stop(signal.SIGKILL)
        # Then every producer call raises BackendUnavailable naming the server, at once
        await _each_fails_fast(app, job.id, f"127.0.0.1:{srv.port}")
        # And once Redis is back (AOF: the job survived) the same app works again
        srv.start()
        assert (await app.get(job.id)).id == job.id
    finally:
        await app.close()


async def test_a_frozen_redis_fails_every_producer_call_within_the_bound(
    srv: RedisServer,
) -> None:
    # Given an app that has stored a job
    app = _app(srv.url)
    assert srv.proc is not None
    try:
        job = await app.enqueue("work", {"n": 1})
        # When Redis freezes (connections accepted, no reply ever)
        srv.proc.send_signal(signal.SIGSTOP)
        # Then every producer call gives up within the bound and says what to do
        await _each_fails_fast(app, job.id, "did not answer within")
        # And a new app (its first call opens the backend) fails as fast
        fresh = _app(srv.url)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="raise \\?deadline="):
            await fresh.enqueue("work", {"n": 2})
        assert time.monotonic() - started < BOUND
        # And when Redis thaws, both carry on
        srv.proc.send_signal(signal.SIGCONT)
        assert (await app.get(job.id)).id == job.id
        assert (await fresh.enqueue("work", {"n": 3})).id
        await fresh.close()
    finally:
        await app.close()


async def test_the_deadline_is_a_url_option(srv: RedisServer) -> None:
    # Given an app with a 0.3 s deadline on a frozen Redis
    app = _app(f"{srv.url}?deadline=0.3")
    assert srv.proc is not None
    try:
        await app.enqueue("work", {"n": 1})
        srv.proc.send_signal(signal.SIGSTOP)
        # When it enqueues
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"0\.3s"):
            await app.enqueue("work", {"n": 2})
        # Then it gives up after about 0.3 s
        assert 0.25 < time.monotonic() - started < 1.0
        srv.proc.send_signal(signal.SIGCONT)
    finally:
        await app.close()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_deadline_is_refused_when_the_app_is_built(value: str) -> None:
    with pytest.raises(ConfigurationError, match="deadline"):
        Conveyor(f"redis://127.0.0.1:1/0?deadline={value}")
