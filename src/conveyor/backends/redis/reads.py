"""Reads of the Redis backend: jobs by id, listings, batch counts, queue stats and gate states.
None of them changes anything; none is atomic across queues (each read is per key or per
queue, as listed in docs/architecture.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import BackendUnavailable, ValidationError
from ...job import Job, JobState
from ..base import BatchCounts, JobPage, ListParams, QueueStats
from . import outbox
from .codec import float_or_none, job_from_hash

if TYPE_CHECKING:
    from .backend import RedisBackend

# `active` holds one member that is no job, KEEPER (score +inf), so that it is never deleted
# and made again between a worker's rounds (claim.lua).
KEEPER = ""
ZSETS = {"queued": "ready", "scheduled": "sched", "active": "active", "awaiting": "await",
         "completed": "f:completed", "failed": "f:failed", "cancelled": "f:cancelled"}  # fmt: skip
LIST_CHUNK = 200  # ids read per round trip when listing a tenant's jobs
MAX_DESCRIBED = 100  # gates listed per queue in stats() (keyed limits can be many)
_CURSOR = re.compile(r"[0-9a-f]{26}")
RATE_BUCKET = 10.0
STATS_WINDOW = 60.0


async def _read(b: RedisBackend, queue: str, ids: Sequence[str]) -> list[Job | None]:
    """The jobs of ``ids`` in ``queue`` (None: missing), in one round trip: each hash, and its
    score in ``active`` (an active job's lease expiry)."""
    pipe = b._client().pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(b.key(queue, f"j:{job_id}"))
        pipe.zscore(b.key(queue, "active"), job_id)
    out = await pipe.execute() if ids else []
    return [
        job_from_hash(job_id, queue, out[2 * i], out[2 * i + 1]) if out[2 * i] else None
        for i, job_id in enumerate(ids)
    ]


async def get_job(b: RedisBackend, job_id: str, *, tenant: str | None = None) -> Job | None:
    """The job in whichever queue holds it. A job an applied outcome created (a chain's next
    step, a fan-out child) waits in the finishing queue's outbox until it is forwarded, one
    worker round trip later; its creator may already read as completed and name it, so a
    miss looks in the outboxes and, finding it there, delivers it now (what every sweep does:
    idempotent) rather than answering "not found" for a job that exists."""
    queues = await b._queues()
    job = await _find(b, queues, job_id)
    if job is None:
        pending = await deliver(b, queues, job_id, tenant)
        job = await _find(b, await b._queues(), job_id)
        if job is None and pending:
            raise undelivered(job_id)
    if job is not None and tenant is not None and job.tenant != tenant:
        return None  # another tenant's: as if it did not exist
    return job


async def deliver(b: RedisBackend, queues: Sequence[str], job_id: str, tenant: str | None) -> bool:
    """A job not found in ``queues`` may be waiting in one of their outboxes (a hand-over not
    yet forwarded): forward the outboxes that hold it as a job of ``tenant`` (any, if None;
    another tenant's is left to the sweeps: a tenant's call acts on its own jobs only).
    Returns whether one held it. A caller that missed the job reads it again after this,
    also when none held it: it may have been forwarded (stored, then its entry deleted)
    between the caller's read and this one; if one held it and the read still misses, the
    forward failed (logged): `undelivered`, not "not found"."""
    pipe = b._client().pipeline(transaction=False)
    for q in queues:
        pipe.hget(b.key(q, "out"), job_id)
    entries = await pipe.execute()
    holding = [q for q, text in zip(queues, entries, strict=True)
               if text is not None and outbox.is_job_of(text, tenant)]  # fmt: skip
    if holding:
        await b.forward_handovers(holding)
    return bool(holding)


def undelivered(job_id: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"job {job_id!r} exists but could not be delivered from its hand-over outbox to its "
        "queue (the forwarder logged why); try again"
    )


async def _find(b: RedisBackend, queues: Sequence[str], job_id: str) -> Job | None:
    """The job with this id in any of ``queues``, read in one round trip."""
    pipe = b._client().pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(b.key(q, f"j:{job_id}"))
        pipe.zscore(b.key(q, "active"), job_id)
    out = await pipe.execute() if queues else []
    for i, q in enumerate(queues):
        if out[2 * i]:
            return job_from_hash(job_id, q, out[2 * i], out[2 * i + 1])
    return None


async def list_jobs(b: RedisBackend, params: ListParams) -> JobPage:
    # Redis keeps no secondary index by creation time: gather the candidate ids from the
    # state sets (O(jobs in those states)), newest first by id (ids sort by creation time).
    if params.cursor is not None and not _CURSOR.fullmatch(params.cursor):
        raise ValidationError(f"invalid cursor {params.cursor!r}", field="cursor")
    if params.tenant is not None:
        return await _list_tenant(b, params)
    client = b._client()
    queues = [params.queue] if params.queue else await b._queues()
    # A state without a set here (no job can be in it on this backend yet) lists nothing.
    states = [params.status.value] if params.status else list(ZSETS)
    states = [s for s in states if s in ZSETS]
    # A job that changes state between two of these reads is in both: one entry per id (the
    # listing reads its hash, which says its state at the time of the read).
    cands: set[tuple[str, str]] = set()
    for q in queues:
        for s in states:
            ids = await client.zrange(b.key(q, ZSETS[s]), 0, -1)
            cands.update((i, q) for i in ids if i != KEEPER)
        if "queued" in states:  # flow-controlled ready jobs wait in their flow's line
            for flow in await _flows(b, q):
                cands.update((i, q) for i in await client.zrange(b.key(q, f"fq:{flow}"), 0, -1))
    ordered = sorted(cands, reverse=True)
    if params.cursor:
        ordered = [c for c in ordered if c[0] < params.cursor]
    out: list[Job] = []
    for start in range(0, len(ordered), LIST_CHUNK):  # one round trip per chunk, per queue
        chunk = ordered[start : start + LIST_CHUNK]
        for q in dict.fromkeys(q for _, q in chunk):
            ids = [i for i, cq in chunk if cq == q]
            out += [j for j in await _read(b, q, ids) if j is not None and _matches(j, params)]
        if len(out) > params.limit:
            break
    out.sort(key=lambda j: j.id, reverse=True)
    out = out[: params.limit + 1]
    more = len(out) > params.limit
    out = out[: params.limit]
    return JobPage(out, out[-1].id if more else None)


async def _list_tenant(b: RedisBackend, params: ListParams) -> JobPage:
    """A tenant's jobs from its index `tn:<tenant>` per queue (ids in lexical order are in
    creation order): reads that tenant's jobs only, newest first, until a page is full."""
    client = b._client()
    want = params.limit + 1
    found: list[Job] = []
    for q in [params.queue] if params.queue else await b._queues():
        index = b.key(q, f"tn:{params.tenant}")
        top, matched = f"({params.cursor}" if params.cursor else "+", 0
        while matched < want:
            ids = await client.zrevrangebylex(index, top, "-", start=0, num=LIST_CHUNK)
            for job in await _read(b, q, ids):
                if job is not None and _matches(job, params) and matched < want:
                    found.append(job)
                    matched += 1
            if len(ids) < LIST_CHUNK:
                break
            top = f"({ids[-1]}"
    found.sort(key=lambda j: j.id, reverse=True)
    page = found[: params.limit]
    return JobPage(page, page[-1].id if len(found) > params.limit else None)


async def batch_counts(b: RedisBackend, batch: str, tenant: str | None = None) -> BatchCounts:
    counts: dict[str, int] = {}
    first: float | None = None
    last: float | None = None
    for q in await b._queues():
        out = await b._eval("batch", q, batch, tenant or "")
        if out[0]:
            first = float(out[0]) if first is None else min(first, float(out[0]))
        if out[1]:
            last = float(out[1]) if last is None else max(last, float(out[1]))
        for k in range(2, len(out), 2):
            counts[out[k]] = counts.get(out[k], 0) + int(out[k + 1])
    return BatchCounts(batch, counts, sum(counts.values()), first, last, b.now())


async def _flows(b: RedisBackend, queue: str) -> set[str]:
    """Every flow of ``queue`` with ready jobs: each is claimable (`flows`) or set aside
    (`fblk`, `fwait`); set-aside flows may have none left."""
    pipe = b._client().pipeline(transaction=False)
    pipe.zrange(b.key(queue, "flows"), 0, -1)
    pipe.zrange(b.key(queue, "fblk"), 0, -1)
    pipe.hkeys(b.key(queue, "fwait"))
    return {f for part in await pipe.execute() for f in part}


async def _limits(b: RedisBackend, queue: str, now: float) -> list[dict[str, Any]]:
    """The queue's gates for stats: the first MAX_DESCRIBED by name, rule and live state."""
    client = b._client()
    names = await client.zrange(b.key(queue, "gates"), 0, MAX_DESCRIBED - 1)
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(b.key(queue, f"g:{name}"))
    rows = await pipe.execute()
    return [describe_gate(n, h, now) for n, h in zip(names, rows, strict=True) if h]


async def stats(b: RedisBackend, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
    client = b._client()
    names = list(queues) if queues else await b._queues()
    out: dict[str, QueueStats] = {}
    live = await b.list_workers()
    now = b.now()
    since = int((now - STATS_WINDOW) // RATE_BUCKET)
    for q in names:
        counts = {s.value: 0 for s in JobState}
        for s, z in ZSETS.items():
            counts[s] = int(await client.zcard(b.key(q, z)))
        counts["active"] -= int(await client.zscore(b.key(q, "active"), KEEPER) is not None)
        counts["queued"] += int(await client.get(b.key(q, "fqn")) or 0)
        st = QueueStats(q, counts, window=STATS_WINDOW)
        st.limits = await _limits(b, q, now)
        maxq = await client.get(b.key(q, "maxq"))  # backpressure: the last enforced max_queued
        st.max_queued = None if maxq is None else int(maxq)
        st.paused = bool(await client.exists(b.key(q, "paused")))  # admin.set_queue_paused
        st.active = counts["active"]
        for w in live:
            if q in w.queues:
                st.workers += 1
                st.concurrency += w.concurrency
        rates = await client.hgetall(b.key(q, "rates"))
        done = secs = 0.0
        for field, value in rates.items():
            kind, _, bucket = field.partition(":")
            if int(bucket) > since:
                if kind == "c":
                    done += float(value)
                elif kind == "r":
                    secs += float(value)
        st.throughput_per_s = done / STATS_WINDOW
        st.avg_run_seconds = secs / done if done else None
        if counts["queued"]:
            st.oldest_seconds = await oldest_seconds(b, q, now)
        for field, value in (await client.hgetall(b.key(q, "cost"))).items():
            task, unit = orjson.loads(field)  # cost.lua: [task, unit] -> total (admin-only)
            st.cost.setdefault(task, {})[unit] = float(value)
        out[q] = st
    return out


async def oldest_seconds(b: RedisBackend, queue: str, now: float) -> float | None:
    """Seconds since the queue's next job to claim became ready: the best of the head of
    ``ready`` and the head job of the best claimable flow (``flows``), as the claim merges them."""
    client = b._client()
    pipe = client.pipeline(transaction=False)
    pipe.zrange(b.key(queue, "ready"), 0, 0, withscores=True)
    pipe.zrange(b.key(queue, "flows"), 0, 0, withscores=True)
    ready, flows = await pipe.execute()
    job_id: str | None = ready[0][0] if ready else None
    if flows and (not ready or flows[0][1] < ready[0][1]):
        head = await client.zrange(b.key(queue, f"fq:{flows[0][0]}"), 0, 0)
        job_id = head[0] if head else job_id
    if job_id is None:
        return None
    created, due = await client.hmget(b.key(queue, f"j:{job_id}"), ["c", "sf"])
    since = float_or_none(due) or float_or_none(created)
    return None if since is None else max(0.0, now - since)


def _matches(job: Job, p: ListParams) -> bool:
    return not (
        (p.status is not None and job.status is not p.status) or (p.task and job.task != p.task)
        or (p.batch and job.batch != p.batch) or (p.tenant and job.tenant != p.tenant)
    )  # fmt: skip


def describe_gate(name: str, h: dict[str, str], now: float) -> dict[str, Any]:
    """A gate's rule and live state, the shape of the SQLite backend's GateRow.describe."""
    spec = orjson.loads(h["spec"])
    out: dict[str, Any] = {"name": name, "kind": spec["k"]}
    if spec["k"] == "rate":
        tat = float(h.get("tat", 0.0))
        out |= {"interval": spec["i"], "burst": spec["b"], "per_second": 1.0 / spec["i"],
                "next_start_at": max(now, tat - (spec["b"] - 1) * spec["i"])}  # fmt: skip
    elif spec["k"] == "conc":
        out |= {"limit": spec["n"], "active": int(float(h.get("active", 0)))}
    else:
        state = h.get("state", "closed")
        until = float_or_none(h.get("until"))
        if state == "open" and now >= (until or 0):
            state = "half"
        out |= {"state": {"half": "half-open"}.get(state, state),
                "failures": int(float(h.get("fails", 0))),
                "open_until": until if state == "open" else None,
                "threshold": spec["f"] or None, "ratio": spec["r"] or None}  # fmt: skip
    return out


__all__ = ["batch_counts", "describe_gate", "get_job", "list_jobs", "stats"]
