"""Redis-only checks of flow control: the keys it adds (hash tags, nothing for unlimited
queues), the invariants of its indexes under random operations, the same claims as the SQLite
reference for the same operations, per-queue claim caps, and Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis import asyncio as aioredis

from conveyor import CircuitBreaker, Concurrency, Conveyor, JobState, RateLimit
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from conveyor.job import Job
from tests.servers import RedisCluster, RedisServer


@pytest.fixture
async def app(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[Conveyor]:
    a = Conveyor(f"{redis_server.url}?prefix=f{abs(hash(request.node.nodeid)) % 10**10}")
    yield a
    await a.close()


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def _register(app: Conveyor, breaker_cooldown: float = 0.05) -> None:
    """Tasks under each kind of gate, unlimited ones beside them, and in queue ``pool`` a
    queue-wide keyed cap that a task's own cap nests in."""
    app.queue("pool", concurrency=Concurrency(3, key="k"))

    @app.task(concurrency=Concurrency(2, key="k"), lease=0.5)
    async def keyed(k: str, i: int) -> None: ...

    @app.task(concurrency=3)
    async def capped(k: str, i: int) -> None: ...

    @app.task(concurrency=Concurrency(1, key="k"), breaker=CircuitBreaker(
        failures=2, cooldown=breaker_cooldown))  # fmt: skip
    async def guarded(k: str, i: int) -> None: ...

    @app.task
    async def free(k: str, i: int) -> None: ...

    @app.task(queue="pool", concurrency=Concurrency(2, key="i"))
    async def pooled(k: str, i: int) -> None: ...

    @app.task(queue="pool")
    async def pool_free(k: str, i: int) -> None: ...

    @app.task(queue="paced", rate_limit=RateLimit("1000/s", burst=3))
    async def paced(k: str, i: int) -> None: ...


async def _claim(app: Conveyor, n: int, worker: str, queues: list[str]) -> list[Job]:
    return (await app.backend.claim_jobs(ClaimParams(queues, n, worker))).jobs


# -- key layout ---------------------------------------------------------------------------------


async def test_flow_keys_carry_the_queue_hash_tag_and_ctx_limits_their_own(
    app: Conveyor, r: Any
) -> None:
    # Given limited jobs in queue alpha: claimed, set aside by a rate gate and a full slot
    @app.task(queue="alpha", rate_limit="1/m", concurrency=Concurrency(1, key="k"))
    async def limited(k: str) -> None: ...

    await app.enqueue_many([("limited", {"k": k}) for k in ("a", "a", "b")])
    await app.open()
    got = await _claim(app, 10, "w1", ["alpha"])
    assert len(got) == 1
    # And a ctx.limit reservation
    await app.backend.reserve_rate("rate:ctx:openai", 0.5, 1)
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    keys = {k async for k in r.scan_iter(f"{prefix}:*")}
    # Then every flow key is one of the queue's (one Cluster slot), named as documented
    p = f"{prefix}:{{alpha}}:"
    for name in ("gates", "fblk", "fqn", 'fq:["conc:task:limited[k=a]","rate:task:limited"]',
                 "g:rate:task:limited", "g:conc:task:limited[k=a]"):  # fmt: skip
        assert p + name in keys, name
    # And the ctx.limit gate lives under its own tag, apart from every queue
    assert f"{prefix}:{{limits}}:gl:rate:ctx:openai" in keys
    for k in keys:
        assert k.startswith((p, f"{prefix}:{{limits}}:")) or k == f"{prefix}:queues", k
    assert await r.hget(f"{prefix}:{{limits}}:gl:rate:ctx:openai", "spec") == (
        '{"k":"rate","i":0.5,"b":1}'
    )


async def test_unlimited_jobs_create_no_flow_keys(app: Conveyor, r: Any) -> None:
    # Given unlimited jobs enqueued, claimed, finished, retried and cancelled
    @app.task(retries=0)
    async def plain(i: int) -> None: ...

    await app.enqueue_many([("plain", {"i": i}) for i in range(5)])
    await app.open()
    jobs = await _claim(app, 3, "w1", ["default"])
    await app.backend.finish_jobs(
        "w1", [Outcome(j.id, j.token, OutcomeKind.FAILED, error={"type": "X"}) for j in jobs]
    )
    await app.retry(jobs[0].id)
    await app.cancel(jobs[0].id)
    # Then none of the flow-control keys exists: the claim stayed on its fast path
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    keys = {k async for k in r.scan_iter(f"{prefix}:*")}
    p = f"{prefix}:{{default}}:"
    assert f"{p}ready" in keys  # (the scan sees the queue's keys)
    flow_keys = [k for k in keys if k.removeprefix(p).startswith(
        ("g:", "gates", "flows", "fblk", "fwait", "fw:", "fq:", "fqn"))]  # fmt: skip
    assert f"{prefix}:{{limits}}:" not in "".join(keys)
    assert flow_keys == []


# -- invariants under random operations -------------------------------------------------------


async def _check_invariants(app: Conveyor, r: Any, queues: list[str]) -> None:
    """The flow indexes agree with the job hashes and the gates with the active jobs."""
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    for q in queues:
        p = f"{prefix}:{{{q}}}:"
        fq_keys = [k async for k in r.scan_iter(f"{p}fq:*", count=1000)]
        total = 0
        flows = dict(await r.zrange(p + "flows", 0, -1, withscores=True))
        blocked = dict(await r.zrange(p + "fblk", 0, -1, withscores=True))
        waiting = await r.hgetall(p + "fwait")
        for key in fq_keys:
            flow = key[len(p) + 3 :]
            members = await r.zrange(key, 0, -1, withscores=True)
            total += len(members)
            for job_id, _ in members:
                h = await r.hmget(p + f"j:{job_id}", "s", "fl")
                assert h == ["queued", flow], (job_id, h)
            aside = flow in blocked or flow in waiting
            if members and not aside:
                assert flows.get(flow) == members[0][1], f"{flow} listed with a stale head"
            else:
                assert flow not in flows, f"{flow} listed though set aside or empty"
        assert int(await r.get(p + "fqn") or 0) == total, "fqn drifted"
        for flow in flows:
            assert await r.exists(p + f"fq:{flow}"), f"{flow} listed without ready jobs"
        for job_id in await r.zrange(p + "ready", 0, -1):
            assert await r.hget(p + f"j:{job_id}", "fl") is None
        # Gates: active counts equal the active jobs passing them (and the cancelled ones whose
        # attempt still runs, `held`); waiters wait on full gates
        active: dict[str, int] = {}
        running = await r.zrange(p + "active", 0, -1) + await r.zrange(p + "held", 0, -1)
        for job_id in running:
            flow = await r.hget(p + f"j:{job_id}", "fl")
            for name in json.loads(flow) if flow else []:
                active[name] = active.get(name, 0) + 1
        for name in await r.zrange(p + "gates", 0, -1):
            g = await r.hgetall(p + f"g:{name}")
            if name.startswith("conc:"):
                assert int(g.get("active", 0)) == active.get(name, 0), name
        for flow, gate in waiting.items():
            assert await r.sismember(p + f"fw:{gate}", flow)
            g = await r.hgetall(p + f"g:{gate}")
            assert g.get("waiters") == "1", (
                f"{gate} has waiters but no flag: settle would miss them"
            )
            if gate.startswith("conc:"):
                limit = json.loads(g["spec"])["n"]
                assert int(g.get("active", 0)) >= limit, f"{flow} waits on {gate} with room"
            else:
                assert g.get("state") == "half" and int(g.get("probe", 0)) > 0, (flow, g)


async def test_indexes_stay_consistent_under_random_operations(app: Conveyor, r: Any) -> None:
    # Given every kind of gate, and a seeded random mix of every transition
    _register(app)
    await app.open()
    rng = random.Random(20261123)
    queues = ["default", "pool", "paced"]
    tasks = ["keyed", "capped", "guarded", "free", "pooled", "pool_free", "paced"]
    held: dict[str, tuple[Job, str]] = {}
    all_ids: list[str] = []
    n = 0
    for step in range(400):
        op = rng.random()
        if op < 0.25:
            items: list[Any] = []
            for _ in range(rng.randint(1, 6)):
                n += 1
                items.append({"task": rng.choice(tasks), "payload": {"k": rng.choice("abc"),
                              "i": n}, "priority": rng.choice([1, 5, 5, 9]),
                              "delay": rng.choice([0, 0, 0, 0.02])})  # fmt: skip
            all_ids += (await app.enqueue_many(items)).ids
        elif op < 0.5:
            worker = rng.choice(["w1", "w2"])
            for j in await _claim(app, rng.randint(1, 6), worker, rng.sample(queues, 2)):
                held[j.id] = (j, worker)
        elif op < 0.75 and held:
            for job_id in rng.sample(sorted(held), rng.randint(1, min(3, len(held)))):
                j, worker = held.pop(job_id)
                kind = rng.choice(list(OutcomeKind))
                await app.backend.finish_jobs(worker, [Outcome(
                    j.id, j.token, kind, error={"type": "X", "message": "x"},
                    retry_in=rng.choice([0, 0.02]))])  # fmt: skip
        elif op < 0.82 and held:
            job_id = rng.choice(sorted(held))
            j, worker = held.pop(job_id)
            await app.backend.release_jobs(worker, [(j.id, j.token)])
        elif op < 0.9 and all_ids:
            job = await app.get(rng.choice(all_ids))
            if not job.status.is_final or job.status is JobState.CANCELLED:
                await app.cancel(job.id)
            elif job.status is JobState.FAILED:
                await app.retry(job.id)
        elif op < 0.95:
            await asyncio.sleep(0.1)  # leases of `keyed` (0.5 s) run out now and then
            await app.backend.recover_expired()
        if step % 20 == 19:
            await _check_invariants(app, r, queues)
    # When everything is drained (breakers cool down, leases of lost jobs run out)
    for _ in range(400):
        for j, worker in list(held.values()):
            await app.backend.finish_jobs(worker, [Outcome(j.id, j.token, OutcomeKind.COMPLETED)])
        held.clear()
        for q in queues:
            for j in await _claim(app, 20, "w1", [q]):
                held[j.id] = (j, "w1")
        await app.backend.recover_expired()
        counts = {q: s.counts for q, s in (await app.stats(queues)).items()}
        if not held and all(c[s] == 0 for c in counts.values() for s in
                            ("queued", "active", "scheduled")):  # fmt: skip
            break
        await asyncio.sleep(0.02)
    # Then every job reached a final state and the indexes are empty and consistent
    assert all(c[s] == 0 for c in counts.values() for s in ("queued", "active", "scheduled"))
    await _check_invariants(app, r, queues)
    for s in (await app.stats(queues)).values():
        assert all(g.get("active", 0) == 0 for g in s.limits), s.limits


# -- the same claims as the SQLite reference ---------------------------------------------------


async def test_claims_match_the_sqlite_backend_step_by_step(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given the same tasks on SQLite and Redis (no timers: breakers stay open once open)
    apps = [Conveyor(f"sqlite:///{tmp_path}/ref.db"),
            Conveyor(f"{redis_server.url}?prefix=diff{tmp_path.name[-8:]}")]  # fmt: skip
    for a in apps:
        _register(a, breaker_cooldown=3600)
        await a.open()
    rng = random.Random(7)
    tasks = ["keyed", "capped", "guarded", "free", "pooled", "pool_free"]
    held: list[dict[int, tuple[Job, str]]] = [{}, {}]
    ids: list[dict[int, str]] = [{}, {}]
    n = 0
    try:
        for _ in range(300):
            op = rng.random()
            if op < 0.3:
                items = []
                for _ in range(rng.randint(1, 8)):
                    n += 1
                    items.append({"task": rng.choice(tasks), "payload": {
                        "k": rng.choice("abcd"), "i": n}, "priority": rng.choice([1, 5, 9])})  # fmt: skip
                for a, known in zip(apps, ids, strict=True):
                    batch = await a.enqueue_many(items)
                    known.update(zip((it["payload"]["i"] for it in items), batch.ids, strict=True))
            elif op < 0.6:
                # When both claim the same way: then they start the same jobs, in the same order
                # (one queue per claim: across queues Redis takes queue by queue; at most 7 per
                # claim: SQLite's claim then reads past each flow's head, see the next test)
                size, worker = rng.randint(1, 7), rng.choice(["w1", "w2"])
                queue = rng.choice(["default", "pool"])
                got = []
                for a, mine in zip(apps, held, strict=True):
                    jobs = await _claim(a, size, worker, [queue])
                    mine.update({j.payload["i"]: (j, worker) for j in jobs})
                    got.append([j.payload["i"] for j in jobs])
                assert got[0] == got[1]
            elif op < 0.85 and held[0]:
                pick = rng.sample(sorted(held[0]), rng.randint(1, min(4, len(held[0]))))
                kinds = [rng.choice([OutcomeKind.COMPLETED, OutcomeKind.FAILED]) for _ in pick]
                for a, mine in zip(apps, held, strict=True):
                    for i, kind in zip(pick, kinds, strict=True):
                        j, worker = mine.pop(i)
                        await a.backend.finish_jobs(worker, [Outcome(
                            j.id, j.token, kind, error={"type": "X", "message": "x"})])  # fmt: skip
            elif n:
                i = rng.randint(1, n)
                states = []
                for a, known, mine in zip(apps, ids, held, strict=True):
                    job = await a.get(known[i])
                    states.append(job.status)
                    if job.status in (JobState.QUEUED, JobState.ACTIVE):
                        await a.cancel(job.id)
                        mine.pop(i, None)
                assert states[0] == states[1]
        # And they end with the same counts and the same gate states
        stats = [await a.stats(["default", "pool"]) for a in apps]
        for q in ("default", "pool"):
            assert stats[0][q].counts == stats[1][q].counts
            strip = [[{k: v for k, v in g.items() if k != "open_until"} for g in s[q].limits]
                     for s in stats]  # fmt: skip
            assert strip[0] == strip[1]
            assert stats[0][q].limits
    finally:
        for a in apps:
            await a.close()


# -- per-queue caps ----------------------------------------------------------------------------


# -- Redis Cluster -----------------------------------------------------------------------------


async def test_flow_control_on_a_cluster(redis_cluster: RedisCluster) -> None:
    # Given a cluster, limited tasks in two queues and a ctx.limit inside a handler
    app = Conveyor(redis_cluster.url + "?prefix=fc")
    peak = {"now": 0, "max": 0}

    @app.task(queue="q1", concurrency=2)
    async def capped(i: int) -> None:
        peak["now"] += 1
        peak["max"] = max(peak["max"], peak["now"])
        await asyncio.sleep(0.01)
        peak["now"] -= 1

    @app.task(queue="q2", rate_limit=RateLimit("50/s", burst=5))
    async def paced(ctx, i: int) -> None:  # type: ignore[no-untyped-def]
        async with ctx.limit("api", "200/s"):
            pass

    try:
        b1 = await app.enqueue_many([("capped", {"i": i}) for i in range(20)])
        b2 = await app.enqueue_many([("paced", {"i": i}) for i in range(20)])
        # When one worker drains both queues
        async with app.worker(concurrency=8, queues=["q1", "q2"]):
            s1 = await b1.wait(timeout=30)
            s2 = await b2.wait(timeout=30)
        # Then everything completed within the limits, and stats show the gates
        assert s1.counts == {"completed": 20} and s2.counts == {"completed": 20}
        assert peak["max"] == 2
        stats = await app.stats(["q1", "q2"])
        assert [g["name"] for g in stats["q1"].limits] == ["conc:task:capped"]
        assert [g["name"] for g in stats["q2"].limits] == ["rate:task:paced"]
    finally:
        await app.close()
