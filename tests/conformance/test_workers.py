"""The worker registry: live workers are listed with their stats; dead ones leave it."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from conveyor import Conveyor
from conveyor.backends.base import TaskInfo, WorkerInfo
from conveyor.worker import services
from tests.conftest import eventually


async def _ids(app: Conveyor) -> list[str]:
    return [w.id for w in await app.workers()]


async def test_a_running_worker_is_listed_with_its_stats(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker that reports itself often, with one job that fails, one that completes and
    # one that holds its slot until released
    monkeypatch.setattr(services, "REGISTRY_INTERVAL", 0.02)
    release = asyncio.Event()

    @app.task(queue="work", retries=0)
    async def job(kind: str) -> str:
        if kind == "fail":
            raise RuntimeError("on purpose")
        if kind == "hold":
            await release.wait()
        return kind

    before = app.backend.now()
    async with app.worker(concurrency=3, name="w-1") as w:
        bad = await job.enqueue(kind="fail")
        good = await job.enqueue(kind="ok")
        for j in (bad, good):
            await eventually(lambda j=j: _final(app, j.id), what="first jobs to end")
        held = await job.enqueue(kind="hold")
        # When the registry is read while the held job runs
        seen = await eventually(lambda: _reported(app, held.id), what="the held job listed")
        # Then the worker is there with who and where it is, what it serves and has done
        assert seen.id == w.id == "w-1"
        assert (seen.host, seen.pid) == (socket.gethostname(), os.getpid())
        assert list(seen.queues) == ["work"] and seen.concurrency == 3
        assert list(seen.running) == [held.id] and seen.active == 1
        assert (seen.processed, seen.failed) == (2, 1)
        assert before - 1 <= seen.started_at <= time.time() + 1
        assert seen.last_seen is not None and before <= seen.last_seen <= app.backend.now() + 1
        assert [t.name for t in seen.tasks] == ["job"] and seen.tasks[0].queue == "work"
        release.set()
        await app.wait(held.id, timeout=5)
    # And once it stopped it is gone
    assert await app.workers() == []


async def test_a_crashed_worker_leaves_the_registry_when_its_heartbeat_expires(
    app: Conveyor,
) -> None:
    # Given two workers on queue 'q' that reported themselves: one then crashed (it never
    # reports again nor unregisters; its heartbeat lasts 1 s, time enough to see it listed on a
    # loaded machine), the other lives on
    await app.open()
    dead = WorkerInfo("dead", ["q"], 4, 0, 1, "h1", time.time(), ttl=1.0)
    live = WorkerInfo("live", ["q"], 2, 1, 2, "h2", time.time(), ttl=60.0, running=["j1"],
                      processed=7, failed=2, tasks=[TaskInfo("t", "q", {"type": "object"})])  # fmt: skip
    await app.backend.worker_heartbeat(dead)
    await app.backend.worker_heartbeat(live)
    assert await _ids(app) == ["dead", "live"]
    # When the crashed one's heartbeat expires (and the live one reports again)
    await eventually(lambda: _ids_are(app, ["live"]), what="the dead worker to leave")
    await app.backend.worker_heartbeat(live)
    # Then only the live one is listed and counted in the queue's stats
    [only] = await app.workers()
    assert only.to_dict() | {"last_seen": None} == live.to_dict()
    stats = (await app.stats(["q"]))["q"]
    assert (stats.workers, stats.concurrency) == (1, 2)


async def test_a_heartbeat_replaces_what_the_worker_reported(app: Conveyor) -> None:
    # Given a worker that reported itself busy
    await app.open()
    info = WorkerInfo("w", ["a", "b"], 5, 2, 9, "h", 100.0, running=["x", "y"], processed=1)
    await app.backend.worker_heartbeat(info)
    # When it reports again, idle, with more done
    info.running, info.active, info.processed, info.failed = [], 0, 6, 1
    await app.backend.worker_heartbeat(info)
    # Then the registry holds the latest report; removing it is idempotent
    [seen] = await app.workers()
    assert (list(seen.running), seen.active, seen.processed, seen.failed) == ([], 0, 6, 1)
    await app.backend.remove_worker("w")
    await app.backend.remove_worker("w")
    assert await app.workers() == []


async def _final(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status.is_final


async def _reported(app: Conveyor, job_id: str) -> WorkerInfo | None:
    for w in await app.workers():
        if job_id in w.running:
            return w
    return None


async def _ids_are(app: Conveyor, ids: list[str]) -> bool:
    return await _ids(app) == ids
