"""Redis-only checks: Lua script headers and loading, error mapping, key layout, start-up
errors and warnings, surviving a Redis restart, and Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from redis import asyncio as aioredis

from conveyor import BackendUnavailable, Conveyor, JobNotFound, JobStateError
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind, WorkerInfo
from conveyor.backends.redis.scripts import NAMES
from tests.conftest import eventually
from tests.servers import RedisCluster, RedisServer, free_port


@pytest.fixture
async def app(server: RedisServer, request: pytest.FixtureRequest):
    prefix = re.sub(r"\W", "", request.node.name)[-40:]
    a = Conveyor(f"{server.url}?prefix=t{prefix}")
    yield a
    await a.close()


def test_every_script_has_a_header_listing_keys_argv_and_returns() -> None:
    # Given the Lua scripts shipped in the package
    lua = resources.files("conveyor.backends.redis").joinpath("lua")
    for name in NAMES:
        text = lua.joinpath(f"{name}.lua").read_text()
        header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
        # Then each documents its KEYS, ARGV (when it takes any) and what it returns
        assert "KEYS[1]" in header, name
        assert "returns" in header, name


async def test_scripts_reload_after_script_flush(app: Conveyor, server: RedisServer) -> None:
    # Given a Redis whose script cache was flushed (as after a restart or failover)
    @app.task
    async def noop() -> int:
        return 1

    await app.open()
    r = aioredis.Redis.from_url(server.url)
    await r.script_flush()
    await r.aclose()
    # When jobs are enqueued and run
    async with app.worker(concurrency=2):
        job = await noop.enqueue()
        # Then the scripts are loaded again on NOSCRIPT and everything works
        assert await app.wait(job.id, timeout=10) == 1


async def test_a_claim_that_ran_before_a_reloaded_finish_looks_again(
    app: Conveyor, server: RedisServer
) -> None:
    # Given a claimed job, and a script cache flushed (a restart or failover) after which the
    # claim script alone was loaded again
    @app.task(retries=1)
    async def flaky() -> None:
        return None

    await flaky.enqueue()
    backend: Any = app.backend
    claim = ClaimParams(["default"], 1, "w1")
    (job,) = (await backend.claim_jobs(claim)).jobs
    r = aioredis.Redis.from_url(server.url)
    await r.script_flush()
    await r.aclose()
    assert (await backend.claim_jobs(claim)).jobs == []
    # When the job's failure (retry in 30 s) and the next claim go out in one round trip: the
    # finish is reloaded and run again after the claim already ran without seeing it
    retry = Outcome(job.id, job.token, OutcomeKind.RETRY, error={"type": "E"}, retry_in=30.0)
    lost, res = await backend.finish_and_claim("w1", [retry], claim)
    # Then the retry is scheduled, and the claim tells the worker to look again now rather than
    # that nothing is due (it would sleep past the retry's due time)
    assert lost == []
    assert (await app.get(job.id)).status.value == "scheduled"
    assert res.jobs == []
    assert res.next_due is not None and res.next_due <= backend.now() + 1.0


async def test_script_error_codes_map_to_conveyor_exceptions(app: Conveyor) -> None:
    @app.task
    async def noop() -> None:
        return None

    async with app.worker(concurrency=1):
        job = await noop.enqueue()
        await app.wait(job.id, timeout=10)
    with pytest.raises(JobStateError):
        await app.cancel(job.id)
    with pytest.raises(JobStateError):
        await app.retry(job.id)
    with pytest.raises(JobNotFound):
        await app.cancel("no-such-job")


@pytest.mark.allow_errors(r"forwarding hand-overs to queue default failed")
async def test_a_hand_over_that_cannot_be_delivered_is_unavailable_not_missing(
    app: Conveyor, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a hand-over waiting in a queue's outbox whose delivery fails (its row is damaged)
    @app.task
    async def noop() -> None: ...

    await noop.enqueue()  # the queue is known
    job_id = "01a23d0000000000000000beef"
    r = aioredis.from_url(server.url, decode_responses=True)
    try:
        out = app.backend.key("default", "out")
        bad = {"k": "job", "q": "default", "row": [job_id, "noop", "not json {", 5]}
        await r.hset(out, job_id, json.dumps(bad))
        # When its id is read or cancelled
        # Then the caller hears the store cannot deliver it now, not that no such job exists
        with (
            caplog.at_level(logging.ERROR, logger="conveyor.redis"),
            pytest.raises(BackendUnavailable, match="hand-over outbox"),
        ):
            await app.get(job_id)
        assert "forwarding hand-overs to queue default failed" in caplog.text
        with pytest.raises(BackendUnavailable, match="hand-over outbox"):
            await app.cancel(job_id)
        # And a tenant the entry is not of is told nothing of it
        with pytest.raises(JobNotFound):
            await app.get(job_id, tenant="acme")
        assert await r.hexists(out, job_id)  # left for the sweeps, with the error logged
    finally:
        await r.aclose()


async def test_all_keys_of_a_queue_share_its_hash_tag(app: Conveyor, server: RedisServer) -> None:
    # Given jobs in two queues, run, scheduled and failed
    @app.task(queue="alpha", retries=0)
    async def boom() -> None:
        raise RuntimeError("x")

    @app.task(queue="beta")
    async def ok() -> None:
        return None

    async with app.worker(concurrency=2, queues=["alpha", "beta"]):
        j1 = await boom.enqueue()
        j2 = await ok.enqueue()
        await app.enqueue(ok, delay=60)
        for j in (j1, j2):
            await eventually(lambda j=j: _final(app, j.id), what="jobs to finish")
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    keys = [k async for k in r.scan_iter(f"{prefix}:*")]
    await r.aclose()
    # Then every per-queue key carries {queue}; only the registries are global
    assert keys
    for k in keys:
        assert (
            "{alpha}" in k
            or "{beta}" in k
            or k == f"{prefix}:queues"
            or k.startswith(f"{prefix}:{{workers}}:")
        ), k


async def test_a_crashed_worker_leaves_no_key_behind(app: Conveyor, server: RedisServer) -> None:
    # Given a worker that reported itself (heartbeat 0.2 s) and then crashed, and a live one
    await app.open()
    await app.backend.worker_heartbeat(WorkerInfo("dead", ["q"], 1, 0, 1, "h", 1.0, ttl=0.2))
    live = WorkerInfo("live", ["q"], 1, 0, 2, "h", 1.0, ttl=60.0)
    await app.backend.worker_heartbeat(live)
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    reg = f"{app.backend.prefix}:{{workers}}:"  # type: ignore[attr-defined]
    try:
        # When its heartbeat expires and the live worker reports again
        await eventually(lambda: _gone(r, reg + "w:dead"), what="the dead worker's hash to expire")
        await app.backend.worker_heartbeat(live)
        # Then neither its hash nor its registry entry is left
        assert await r.zrange(reg + "live", 0, -1) == ["live"]
        assert [w.id for w in await app.workers()] == ["live"]
    finally:
        await r.aclose()


async def _gone(r: aioredis.Redis, key: str) -> bool:
    return not await r.exists(key)


async def test_tenant_keys_live_and_go_with_their_jobs(app: Conveyor, server: RedisServer) -> None:
    # Given jobs of tenant A with idempotency keys, and one without a tenant
    @app.task(queue="q")
    async def t() -> None:
        return None

    a1 = await app.enqueue("t", idempotency_key="k1", tenant="A")
    a2 = await app.enqueue("t", idempotency_key="k2", tenant="A")
    plain = await app.enqueue("t", idempotency_key="k1")
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    q = f"{app.backend.prefix}:{{q}}:"  # type: ignore[attr-defined]
    try:
        # Then A's keys are in A's hash, its jobs in A's listing index
        assert await r.hgetall(q + "idem:A") == {"k1": a1.id, "k2": a2.id}
        assert await r.hgetall(q + "idem") == {"k1": plain.id}
        assert await r.zrange(q + "tn:A", 0, -1) == [a1.id, a2.id]
        # When an entry from before keys were per tenant sends tenant-less 'k2' to A's job
        await r.hset(q + "idem", "k2", a2.id)
        other = await app.enqueue("t", idempotency_key="k2")
        # Then it is no match: the caller gets a job of its own
        assert other.id != a2.id and other.tenant is None
        # When the jobs are cleaned up
        for j in (a1, a2, plain, other):
            await app.cancel(j.id)
        assert await app.cleanup() == 4
        # Then no key of theirs is left
        for key in ("idem:A", "idem", "tn:A"):
            assert not await r.exists(q + key), key
    finally:
        await r.aclose()


async def _final(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status.is_final


async def test_unreachable_redis_is_a_clear_error_at_start() -> None:
    # Given nothing listening on a port
    app = Conveyor(f"redis://127.0.0.1:{free_port()}/0")
    # Then the first call says Redis is unreachable (no hang, no raw driver error)
    with pytest.raises(BackendUnavailable, match="cannot reach Redis"):
        await app.open()
    await app.close()


async def test_warns_loudly_unless_maxmemory_policy_is_noeviction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = RedisServer(tmp_path / "lru", extra=["--maxmemory-policy", "allkeys-lru"])
    try:
        app = Conveyor(srv.url)
        with caplog.at_level(logging.WARNING, logger="conveyor.redis"):
            await app.open()
        await app.close()
        assert any("noeviction" in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()


# The worker logs each failed backend call while Redis is down, and retries it.
@pytest.mark.allow_errors(r"backend call failed; retrying shortly(?s:.*)ConnectionError")
async def test_workers_ride_out_a_redis_restart_without_losing_jobs(tmp_path: Path) -> None:
    # Given Redis with AOF (everysec) and a worker draining jobs
    srv = RedisServer(tmp_path / "aof", appendonly=True)
    app = Conveyor(srv.url)
    done: set[int] = set()

    @app.task
    async def work(n: int) -> int:
        await asyncio.sleep(0.002)
        done.add(n)
        return n

    try:
        await app.enqueue_many([("work", {"n": i}) for i in range(600)])
        async with app.worker(concurrency=20):
            await eventually(lambda: len(done) >= 100, what="some jobs done")
            # When Redis restarts mid-run (clean shutdown, AOF replayed at start)
            await asyncio.to_thread(srv.restart)
            # Then the worker resumes by itself and every job completes
            await eventually(
                lambda: _count(app, "completed", 600), timeout=60, what="all jobs completed"
            )
        assert done == set(range(600))
    finally:
        await app.close()
        srv.stop()


async def _count(app: Conveyor, state: str, n: int) -> bool:
    try:
        stats = await app.stats()
    except Exception:
        return False
    return stats["default"].counts[state] == n


async def test_cluster_runs_jobs_across_queues_in_different_slots(
    redis_cluster: RedisCluster,
) -> None:
    # Given a 3-master cluster and tasks in six queues (spread over the masters' slots)
    app = Conveyor(redis_cluster.url + "?prefix=rc")
    seen: list[str] = []
    queues = [f"q{i}" for i in range(6)]
    for q in queues:

        async def handler(ctx, n: int, _q: str = q) -> str:
            await ctx.progress(50, "half")
            seen.append(_q)
            return _q

        app.task(handler, name=f"h-{q}", queue=q)
    try:
        # When 300 jobs are enqueued in one call and drained by one worker on all queues
        batch = await app.enqueue_many(
            [(f"h-{queues[i % 6]}", {"n": i}) for i in range(300)], priority="high"
        )
        async with app.worker(concurrency=20, queues=queues):
            st = await batch.wait(timeout=60)
        # Then every job completed exactly once, in every queue
        assert st.counts == {"completed": 300}
        assert sorted(seen) == sorted(queues[i % 6] for i in range(300))
        stats = await app.stats()
        assert all(stats[q].counts["completed"] == 50 for q in queues)
        # And cancel / retry / events work through the cluster
        job = await app.enqueue("h-q0", {"n": 1}, delay=30)
        assert (await app.cancel(job.id)).status.value == "cancelled"
        retried = await app.retry(job.id)
        assert retried.status.value == "queued"
        events = [e async for e in app.events(since="0", follow=False, job_id=job.id)]
        assert [e.type.value for e in events] == ["scheduled", "cancelled", "retrying"]
    finally:
        await app.close()


async def test_cluster_calls_wait_for_a_connection(redis_cluster: RedisCluster) -> None:
    # Given a cluster app with at most 4 connections per node
    app = Conveyor(f"{redis_cluster.url}?prefix=tpool&pool_size=4")

    @app.task
    async def work(n: int) -> int:
        return n

    try:
        job = await app.enqueue("work", {"n": 1})
        # When 1,000 reads run at once (redis-py's cluster client raises MaxConnectionsError
        # when a node's connections are all in use)
        got = await asyncio.gather(*(app.get(job.id) for _ in range(1000)))
        # Then every one of them waited its turn and succeeded
        assert {j.id for j in got} == {job.id}
    finally:
        await app.close()


async def test_cluster_first_calls_on_app_sync_all_succeed(redis_cluster: RedisCluster) -> None:
    # Given a cluster app opened on this loop (app.sync's loop gets a client of its own, new)
    app = Conveyor(f"{redis_cluster.url}?prefix=tsync")

    @app.task
    async def work(n: int) -> int:
        return n

    threads = 32
    start = threading.Barrier(threads)

    def first_call(i: int) -> int:
        start.wait()
        return app.sync.enqueue("work", {"n": i}).payload["n"]

    try:
        await app.open()
        # When 32 threads make that client's first calls at once (redis-py routed a keyed
        # command of a client not yet initialised to a random node: MOVED, until it dropped
        # the connections the other calls were using)
        with ThreadPoolExecutor(threads) as pool:
            got = await asyncio.gather(
                *(asyncio.wrap_future(pool.submit(first_call, i)) for i in range(threads))
            )
        # Then every call succeeded
        assert sorted(got) == list(range(threads))
    finally:
        await app.close()
