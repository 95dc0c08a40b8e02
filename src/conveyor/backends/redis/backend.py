"""The Redis backend: every state transition is one Lua script (see ``lua/``), every key of a
queue shares the hash tag ``{queue}`` so a queue lives in one Redis Cluster slot.

URL forms: ``redis://host:port/db``, ``rediss://…``, ``unix:///path/redis.sock?db=0``, and
``redis+cluster://host:port`` for Redis Cluster. Option ``prefix`` (default ``cv``) namespaces
all keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import orjson
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...clock import Clock
from ...errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    JobNotFound,
    ValidationError,
)
from ...job import FINAL_STATES, Job, JobState, Progress
from ..base import (
    EVENTS_OLDEST,
    BatchCounts,
    Capabilities,
    ClaimParams,
    ClaimResult,
    EnqueueResult,
    EventFilter,
    EventPage,
    EventRetention,
    EventType,
    JobPage,
    ListParams,
    NewJob,
    Outcome,
    OutcomeKind,
    QueueStats,
    Recovered,
    Retention,
    WakeCallback,
    WorkerInfo,
)
from ..outcomes import encode, finish_each
from . import registry
from .events import EventLog
from .listener import RedisListener
from .scripts import SCRIPTS, evalsha, translate

log = logging.getLogger("conveyor.redis")
_STATES = {s.value: s for s in JobState}
_ZSETS = {"queued": "ready", "scheduled": "sched", "active": "active",
          "completed": "f:completed", "failed": "f:failed", "cancelled": "f:cancelled"}  # fmt: skip
PRUNE_CHUNK = 1000
LIST_CHUNK = 200  # ids read per round trip when listing a tenant's jobs
MAX_DESCRIBED = 100  # gates listed per queue in stats() (keyed limits can be many)
_CURSOR = re.compile(r"[0-9a-f]{26}")
RATE_BUCKET = 10.0
STATS_WINDOW = 60.0


def parse_redis_url(url: str) -> tuple[str, bool, str]:
    """Return (url for redis-py, cluster?, key prefix)."""
    parts = urlsplit(url)
    cluster = parts.scheme == "redis+cluster"
    if parts.scheme not in ("redis", "rediss", "unix", "redis+cluster"):
        raise ConfigurationError(f"not a redis URL: {url!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    prefix = query.pop("prefix", ["cv"])[-1]
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(f"redis URL option prefix={prefix!r} must be non-empty, no braces")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"malformed redis URL {url!r}: no host")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"malformed redis URL {url!r}: {exc}") from None
    scheme = "redis" if cluster else parts.scheme
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query, doseq=True), ""))
    return clean, cluster, prefix


def _f(v: str | None) -> float | None:
    return None if v is None else float(v)


def job_from_hash(job_id: str, queue: str, h: dict[str, str]) -> Job:
    pg = h.get("pg")
    return Job(
        job_id, queue, h["t"], orjson.loads(h["p"]), int(h["pr"]), _STATES[h["s"]],
        int(h.get("a", 0)), int(h["ma"]), int(h.get("st", 0)), int(h["ms"]), _f(h.get("to")),
        float(h["l"]), Progress(**orjson.loads(pg)) if pg else Progress(),
        orjson.loads(h["r"]) if "r" in h else None, orjson.loads(h["e"]) if "e" in h else None,
        h.get("tn"), h.get("b"), h.get("wf"), h.get("pa"), h.get("ik"), float(h["c"]),
        _f(h.get("sf")), _f(h.get("sa")), _f(h.get("fa")), _f(h.get("le")), h.get("w"),
        int(h.get("tk", 0)),
    )  # fmt: skip


def _pairs(flat: list[Any]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisBackend:
    """`Backend` on Redis or Redis Cluster."""

    capabilities = Capabilities(cross_process=True, cross_host=True, blocking_wakeups=True)

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = url
        self._redis_url, self.cluster, self.prefix = parse_redis_url(url)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        # worker -> {job id -> queue} of jobs it claimed: outcomes name jobs, keys need queues.
        self._held: dict[str, dict[str, str]] = {}
        self._offset = 0.0  # Redis TIME - local time, refreshed by every script that returns now
        self._opened = False
        self._known_queues: set[str] = set()
        self.old_registry_gone = False
        self._events = EventLog(self)

    # -- connections ----------------------------------------------------------------------------

    def make_client(self, **kw: Any) -> Any:
        opts: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30} | kw
        if self.cluster:
            return aioredis.RedisCluster.from_url(self._redis_url, **opts)
        return aioredis.Redis.from_url(self._redis_url, **opts)

    def _client(self) -> Any:
        # redis-py asyncio connections belong to one event loop (the app's, the sync facade's).
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self.make_client()
        return client

    def key(self, queue: str, suffix: str = "") -> str:
        return f"{self.prefix}:{{{queue}}}:{suffix}"

    async def open(self) -> None:
        client = self._client()
        try:
            await client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        if not self._opened:
            self._opened = True
            await self._check_config(client)

    async def _check_config(self, client: Any) -> None:
        try:
            cfg = await client.config_get("maxmemory-policy")
            policies = set(cfg.values()) if not self.cluster else {
                v for node in cfg.values() for v in (node.values() if isinstance(node, dict) else [node])
            }  # fmt: skip
        except RedisError:
            return  # CONFIG may be disabled (managed Redis): nothing to check
        bad = {p for p in policies if p != "noeviction"}
        if bad:
            log.warning(
                "Redis maxmemory-policy is %s, not noeviction: Redis may evict job keys under "
                "memory pressure and jobs would be LOST. Set maxmemory-policy noeviction.",
                ",".join(sorted(bad)),
            )

    async def close(self) -> None:
        clients = list(self._clients.items())
        self._clients = weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        for owner, client in clients:
            if owner is loop:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def now(self) -> float:
        return time.time() + self._offset

    def _saw_now(self, now: str) -> float:
        t = float(now)
        self._offset = t - time.time()
        return t

    async def _eval(self, name: str, queue: str, *args: Any, prefix: str | None = None) -> Any:
        keys = [prefix if prefix is not None else self.key(queue)]
        try:
            return await evalsha(self._client(), SCRIPTS[name], keys, list(args))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.url} unreachable: {exc}") from exc

    async def _queues(self) -> list[str]:
        return sorted(await self._client().smembers(f"{self.prefix}:queues"))

    # -- job transitions --------------------------------------------------------------------------

    async def enqueue_jobs(self, jobs: Sequence[NewJob]) -> EnqueueResult:
        by_queue: dict[str, list[int]] = {}
        for i, j in enumerate(jobs):
            by_queue.setdefault(j.queue, []).append(i)
        ids = [j.id for j in jobs]
        created = [True] * len(jobs)
        now = self.now()
        client = self._client()
        new = [q for q in by_queue if q not in self._known_queues]
        if new:  # once per queue and process: not a round trip per enqueue
            await client.sadd(f"{self.prefix}:queues", *new)
            self._known_queues.update(new)
        for queue, idx in by_queue.items():
            payload = orjson.dumps([
                (jobs[i].id, jobs[i].task, jobs[i].payload, jobs[i].priority, jobs[i].max_attempts,
                 jobs[i].max_stalls, jobs[i].timeout, jobs[i].lease, jobs[i].delay, jobs[i].tenant,
                 jobs[i].batch, jobs[i].workflow, jobs[i].parent, jobs[i].idempotency_key,
                 jobs[i].flow)
                for i in idx
            ]).decode()  # fmt: skip
            # The gates' rules, once per call (the script upserts those of created jobs).
            specs = {g.name: g.spec for i in idx if jobs[i].flow is not None for g in jobs[i].gates}
            out = await self._eval(
                "enqueue", queue, payload, orjson.dumps(specs).decode() if specs else ""
            )
            now = self._saw_now(out[0])
            for n, i in enumerate(idx):
                ids[i] = out[1 + 2 * n]
                created[i] = out[2 + 2 * n] == 1
        return EnqueueResult(ids, created, now)

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        jobs: list[Job] = []
        next_due: float | None = None
        limit = params.limit
        for queue in params.queues:
            if limit <= 0:
                break
            cap = _cap(params, queue, limit)
            if cap <= 0:
                continue
            got, due = self._claimed(queue, await self._eval("claim", queue, params.worker, cap))
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
            jobs += got
            limit -= len(got)
        if jobs:
            self.remember(params.worker, jobs)
        return ClaimResult(jobs, next_due if len(jobs) < params.limit else None)

    async def _by_queue(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """Which queue each held job lives in (the worker knows; this is for direct calls)."""
        queues = await self._queues()
        found: dict[str, list[str]] = {}
        for job_id in job_ids:
            q = await self._queue_of(job_id, queues)
            if q is not None:
                found.setdefault(q, []).append(job_id)
        return found

    async def _queue_of(self, job_id: str, queues: list[str] | None = None) -> str | None:
        client = self._client()
        for q in queues if queues is not None else await self._queues():
            if await client.exists(self.key(q, f"j:{job_id}")):
                return q
        return None

    async def _finish_calls(
        self, worker: str, outcomes: Sequence[Outcome]
    ) -> tuple[list[tuple[str, str, list[Any]]], list[str]]:
        """The finish script calls (one per queue) and the ids of unknown jobs (lost)."""
        by_queue = await self._group(worker, [o.job_id for o in outcomes])
        by_id = {o.job_id: o for o in outcomes}
        calls: list[tuple[str, str, list[Any]]] = []
        for queue, ids in by_queue.items():
            rows = []
            for job_id in ids:
                e = encode(by_id[job_id])  # never raises: a bad outcome fails its own attempt
                if e.kind is OutcomeKind.COMPLETED:
                    rows.append((job_id, e.token, "completed", e.result))
                else:
                    rows.append((job_id, e.token, e.kind.value, None, e.error, e.retry_in,
                                 orjson.dumps(e.brief).decode()))  # fmt: skip
            calls.append(("finish", queue, [worker, orjson.dumps(rows).decode()]))
        known = {i for ids in by_queue.values() for i in ids}
        return calls, [o.job_id for o in outcomes if o.job_id not in known]

    async def _pipeline(self, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        """Run script calls in one round trip; a NOSCRIPT result is re-run (loading it). Other
        error replies are returned in place: one failed call must not hide the others' results
        (a claim that committed is never discarded)."""
        client = self._client()
        pipe = client.pipeline(transaction=False)
        for name, queue, args in calls:
            pipe.execute_command("EVALSHA", SCRIPTS[name].sha, 1, self.key(queue), *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.url} unreachable: {exc}") from exc
        reloaded = [i for i, res in enumerate(results) if isinstance(res, NoScriptError)]
        for i in reloaded:
            name, queue, args = calls[i]
            try:
                results[i] = await self._eval(name, queue, *args)
            except ResponseError as exc:
                results[i] = exc
        if reloaded:
            # A claim that ran before a call ahead of it (run again just now) did not see that
            # call's effects, e.g. a retry it scheduled: it reports work due now, so the worker
            # claims again instead of sleeping past that due time.
            for j in range(reloaded[0] + 1, len(calls)):
                if calls[j][0] == "claim" and j not in reloaded and isinstance(results[j], list):
                    results[j][1] = results[j][0]
        return results

    async def _finish_results(
        self, worker: str, outcomes: Sequence[Outcome], results: list[Any], lost: list[str]
    ) -> list[str]:
        """Collect lost ids from finish results; outcomes of a finish call that failed are
        applied again one by one (`finish_each`), so they cannot hold the others back."""
        failed = False
        for res in results:
            if isinstance(res, RedisConnectionError | RedisTimeoutError):
                raise BackendUnavailable(f"Redis at {self.url} unreachable: {res}") from res
            if isinstance(res, Exception):
                failed = True
                log.error("worker %s: a finish script failed (%s); applying its outcomes one "
                          "by one", worker, str(res)[:200])  # fmt: skip
            else:
                lost += res
        if failed:
            lost = await finish_each(lambda one: self._finish_plain(worker, one), outcomes)
        self._forget(worker, [o.job_id for o in outcomes])
        return lost

    async def _finish_plain(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        calls, lost = await self._finish_calls(worker, outcomes)
        for res in await self._pipeline(calls):
            if isinstance(res, Exception):
                raise res
            lost += res
        return lost

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        calls, lost = await self._finish_calls(worker, outcomes)
        return await self._finish_results(worker, outcomes, await self._pipeline(calls), lost)

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        calls, lost = await self._finish_calls(worker, outcomes)
        first = params.queues[0]
        cap = _cap(params, first, params.limit)
        claim = [("claim", first, [worker, cap])] if cap > 0 else []
        results = await self._pipeline([*calls, *claim])
        jobs: list[Job] = []
        next_due: float | None = None
        if claim:
            if isinstance(results[-1], Exception):
                # The finish calls still count: apply their results before raising.
                await self._finish_results(worker, outcomes, results[: len(calls)], lost)
                raise results[-1]
            jobs, next_due = self._claimed(first, results[-1])
            self.remember(worker, jobs)
        lost = await self._finish_results(worker, outcomes, results[: len(calls)], lost)
        rest = [q for q in params.queues[1:]]
        if rest and len(jobs) < params.limit:
            try:
                more = await self.claim_jobs(
                    ClaimParams(rest, params.limit - len(jobs), worker, params.queue_limits)
                )
            except BackendUnavailable:
                if not jobs:
                    raise
                more = ClaimResult([], None)  # keep what was claimed; claim the rest next round
            jobs += more.jobs
            if more.next_due is not None:
                next_due = more.next_due if next_due is None else min(next_due, more.next_due)
        if jobs:
            self.remember(worker, jobs)
        return lost, ClaimResult(jobs, next_due if len(jobs) < params.limit else None)

    def _claimed(self, queue: str, out: list[Any]) -> tuple[list[Job], float | None]:
        self._saw_now(out[0])
        next_due = float(out[1]) if out[1] != "" else None
        n = int(out[2])
        return [
            job_from_hash(out[3 + 2 * k], queue, _pairs(out[4 + 2 * k])) for k in range(n)
        ], next_due

    async def _group(self, worker: str, job_ids: Sequence[str]) -> dict[str, list[str]]:
        cached = self._held.get(worker, {})
        missing = [j for j in job_ids if j not in cached]
        out: dict[str, list[str]] = {}
        for j in job_ids:
            if j in cached:
                out.setdefault(cached[j], []).append(j)
        if missing:
            for q, ids in (await self._by_queue(missing)).items():
                out.setdefault(q, []).extend(ids)
        return out

    def _forget(self, worker: str, job_ids: Sequence[str]) -> None:
        held = self._held.get(worker)
        if held is not None:
            for j in job_ids:
                held.pop(j, None)

    def remember(self, worker: str, jobs: Sequence[Job]) -> None:
        held = self._held.setdefault(worker, {})
        for j in jobs:
            held[j.id] = j.queue

    async def release_jobs(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        n = 0
        tokens = dict(jobs)
        for queue, ids in (await self._group(worker, [j for j, _ in jobs])).items():
            held = orjson.dumps([(j, tokens[j]) for j in ids]).decode()
            n += int(await self._eval("release", queue, worker, held))
        self._forget(worker, [j for j, _ in jobs])
        return n

    async def extend_leases(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[str]:
        lost: list[str] = []
        tokens = dict(jobs)
        grouped = await self._group(worker, [j for j, _ in jobs])
        for queue, ids in grouped.items():
            held = orjson.dumps([(j, tokens[j]) for j in ids]).decode()
            lost += await self._eval("extend", queue, worker, held)
        known = {i for ids in grouped.values() for i in ids}
        lost += [j for j, _ in jobs if j not in known]
        self._forget(worker, lost)
        return lost

    async def set_progress(
        self, job_id: str, token: int, worker: str, progress: dict[str, Any]
    ) -> bool:
        grouped = await self._group(worker, [job_id])
        for queue in grouped:
            data = orjson.dumps(progress).decode()
            return bool(await self._eval("progress", queue, job_id, token, worker, data))
        return False

    async def _steer(self, action: str, job_id: str, tenant: str | None) -> Job:
        """Run the ``cancel`` or ``retry`` script on one job; it returns the changed job."""
        queue = await self._queue_of(job_id)
        if queue is None:
            raise JobNotFound(job_id)
        try:
            out = await self._eval(action, queue, job_id, tenant or "")
        except ResponseError as exc:
            raise translate(exc, job_id, action) from None
        return job_from_hash(job_id, queue, _pairs(out))

    async def cancel_job(self, job_id: str, *, tenant: str | None = None) -> Job:
        return await self._steer("cancel", job_id, tenant)

    async def retry_job(self, job_id: str, *, tenant: str | None = None) -> Job:
        return await self._steer("retry", job_id, tenant)

    async def recover_expired(self) -> list[Recovered]:
        out: list[Recovered] = []
        for queue in await self._queues():
            flat = await self._eval("recover", queue)
            for k in range(0, len(flat), 2):
                out.append(Recovered(flat[k], queue, _STATES[flat[k + 1]]))
        return out

    # -- reads ------------------------------------------------------------------------------------

    async def get_job(self, job_id: str, *, tenant: str | None = None) -> Job | None:
        client = self._client()
        for q in await self._queues():
            h = await client.hgetall(self.key(q, f"j:{job_id}"))
            if h:
                if tenant is not None and h.get("tn") != tenant:
                    return None  # another tenant's: as if it did not exist
                return job_from_hash(job_id, q, h)
        return None

    async def list_jobs(self, params: ListParams) -> JobPage:
        # Redis keeps no secondary index by creation time: gather the candidate ids from the
        # state sets (O(jobs in those states)), newest first by id (ids sort by creation time).
        if params.cursor is not None and not _CURSOR.fullmatch(params.cursor):
            raise ValidationError(f"invalid cursor {params.cursor!r}", field="cursor")
        if params.tenant is not None:
            return await self._list_tenant(params)
        client = self._client()
        queues = [params.queue] if params.queue else await self._queues()
        states = [params.status.value] if params.status else list(_ZSETS)
        cands: list[tuple[str, str]] = []
        for q in queues:
            for s in states:
                cands += [(i, q) for i in await client.zrange(self.key(q, _ZSETS[s]), 0, -1)]
            if "queued" in states:  # flow-controlled ready jobs wait in their flow's line
                for flow in await self._flows(q):
                    cands += [(i, q) for i in await client.zrange(self.key(q, f"fq:{flow}"), 0, -1)]
        cands.sort(reverse=True)
        if params.cursor:
            cands = [c for c in cands if c[0] < params.cursor]
        out: list[Job] = []
        for job_id, q in cands:
            h = await client.hgetall(self.key(q, f"j:{job_id}"))
            if not h:
                continue
            job = job_from_hash(job_id, q, h)
            if not _matches(job, params):
                continue
            out.append(job)
            if len(out) > params.limit:
                break
        more = len(out) > params.limit
        out = out[: params.limit]
        return JobPage(out, out[-1].id if more else None)

    async def _list_tenant(self, params: ListParams) -> JobPage:
        """A tenant's jobs from its index `tn:<tenant>` per queue (ids in lexical order are in
        creation order): reads that tenant's jobs only, newest first, until a page is full."""
        client = self._client()
        want = params.limit + 1
        found: list[Job] = []
        for q in [params.queue] if params.queue else await self._queues():
            index = self.key(q, f"tn:{params.tenant}")
            top, matched = f"({params.cursor}" if params.cursor else "+", 0
            while matched < want:
                ids = await client.zrevrangebylex(index, top, "-", start=0, num=LIST_CHUNK)
                pipe = client.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hgetall(self.key(q, f"j:{job_id}"))
                for job_id, h in zip(ids, await pipe.execute() if ids else [], strict=True):
                    job = job_from_hash(job_id, q, h) if h else None
                    if job is not None and _matches(job, params) and matched < want:
                        found.append(job)
                        matched += 1
                if len(ids) < LIST_CHUNK:
                    break
                top = f"({ids[-1]}"
        found.sort(key=lambda j: j.id, reverse=True)
        page = found[: params.limit]
        return JobPage(page, page[-1].id if len(found) > params.limit else None)

    async def batch_counts(self, batch: str) -> BatchCounts:
        counts: dict[str, int] = {}
        first: float | None = None
        last: float | None = None
        for q in await self._queues():
            out = await self._eval("batch", q, batch)
            if out[0]:
                first = float(out[0]) if first is None else min(first, float(out[0]))
            if out[1]:
                last = float(out[1]) if last is None else max(last, float(out[1]))
            for k in range(2, len(out), 2):
                counts[out[k]] = counts.get(out[k], 0) + int(out[k + 1])
        return BatchCounts(batch, counts, sum(counts.values()), first, last, self.now())

    async def _flows(self, queue: str) -> set[str]:
        """Every flow of ``queue`` with ready jobs: each is claimable (`flows`) or set aside
        (`fblk`, `fwait`); set-aside flows may have none left."""
        pipe = self._client().pipeline(transaction=False)
        pipe.zrange(self.key(queue, "flows"), 0, -1)
        pipe.zrange(self.key(queue, "fblk"), 0, -1)
        pipe.hkeys(self.key(queue, "fwait"))
        return {f for part in await pipe.execute() for f in part}

    async def _limits(self, queue: str, now: float) -> list[dict[str, Any]]:
        """The queue's gates for stats: the first MAX_DESCRIBED by name, rule and live state."""
        client = self._client()
        names = await client.zrange(self.key(queue, "gates"), 0, MAX_DESCRIBED - 1)
        if not names:
            return []
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.key(queue, f"g:{name}"))
        rows = await pipe.execute()
        return [describe_gate(n, h, now) for n, h in zip(names, rows, strict=True) if h]

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        client = self._client()
        names = list(queues) if queues else await self._queues()
        out: dict[str, QueueStats] = {}
        live = await self.list_workers()
        now = self.now()
        since = int((now - STATS_WINDOW) // RATE_BUCKET)
        for q in names:
            counts = {s.value: 0 for s in JobState}
            for s, z in _ZSETS.items():
                counts[s] = int(await client.zcard(self.key(q, z)))
            counts["queued"] += int(await client.get(self.key(q, "fqn")) or 0)
            st = QueueStats(q, counts, window=STATS_WINDOW)
            st.limits = await self._limits(q, now)
            st.active = counts["active"]
            for w in live:
                if q in w.queues:
                    st.workers += 1
                    st.concurrency += w.concurrency
            rates = await client.hgetall(self.key(q, "rates"))
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
            out[q] = st
        return out

    # -- maintenance ------------------------------------------------------------------------------

    async def _prune(self, queue: str, state: str, age: float | None, keep: int | None) -> int:
        total = 0
        while True:
            n = int(await self._eval("prune", queue, state, "" if age is None else repr(age),
                                     "" if keep is None else keep, PRUNE_CHUNK))  # fmt: skip
            total += n
            if n < PRUNE_CHUNK:
                return total

    async def apply_retention(self, queue: str, rule: Retention) -> int:
        now = self.now()
        removed = 0
        for state, age, count in (
            ("completed", rule.completed_max_age, rule.completed_max_count),
            ("failed", rule.failed_max_age, rule.failed_max_count),
            ("cancelled", rule.cancelled_max_age, rule.cancelled_max_count),
        ):
            if age is not None or count is not None:
                removed += await self._prune(queue, state, age, count)
        client = self._client()
        old = int((now - 3600) // RATE_BUCKET)
        fields = [
            f for f in await client.hkeys(self.key(queue, "rates")) if int(f.split(":")[1]) < old
        ]
        if fields:
            await client.hdel(self.key(queue, "rates"), *fields)
        return removed

    async def cleanup(self, older_than: float, states: Sequence[JobState]) -> int:
        removed = 0
        for q in await self._queues():
            for s in states:
                if s in FINAL_STATES:
                    removed += await self._prune(q, s.value, older_than, None)
        return removed

    async def trim_events(self, rule: EventRetention) -> int:
        return await self._events.trim(rule)

    async def append_event(
        self,
        type: EventType,
        *,
        job_id: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        q = queue or "default"
        await self._client().sadd(f"{self.prefix}:queues", q)
        await self._eval("event", q, type.value, job_id or "", task or "", tenant or "",
                         orjson.dumps(data).decode() if data else "")  # fmt: skip

    async def read_events(
        self, since: str = EVENTS_OLDEST, limit: int = 1000, where: EventFilter | None = None
    ) -> EventPage:
        return await self._events.read(since, limit, where)

    async def last_event_cursor(self) -> str:
        return await self._events.head()

    async def reserve_rate(self, name: str, interval: float, burst: int) -> float:
        # Global, not per queue: its own hash tag (one slot), never a queue's key.
        out = await self._eval("reserve", "", name, repr(float(interval)), int(burst),
                               prefix=f"{self.prefix}:{{limits}}:")  # fmt: skip
        self._saw_now(out[0])
        return float(out[1])

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        await registry.heartbeat(self, info)

    async def remove_worker(self, worker: str) -> None:
        await registry.remove(self, worker)
        self._held.pop(worker, None)

    async def list_workers(self) -> list[WorkerInfo]:
        return await registry.live(self)

    async def listen(
        self, queues: Sequence[str], callback: WakeCallback, worker: str
    ) -> RedisListener:
        return RedisListener(self, queues, callback, worker)


def _matches(job: Job, p: ListParams) -> bool:
    return not (
        (p.status is not None and job.status is not p.status) or (p.task and job.task != p.task)
        or (p.batch and job.batch != p.batch) or (p.tenant and job.tenant != p.tenant)
    )  # fmt: skip


def _cap(params: ClaimParams, queue: str, remaining: int) -> int:
    """How many this claim may take from ``queue``: what is left, within its per-queue cap."""
    ql = params.queue_limits
    return remaining if ql is None or queue not in ql else min(remaining, ql[queue])


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
        until = _f(h.get("until"))
        if state == "open" and now >= (until or 0):
            state = "half"
        out |= {"state": {"half": "half-open"}.get(state, state),
                "failures": int(float(h.get("fails", 0))),
                "open_until": until if state == "open" else None,
                "threshold": spec["f"] or None, "ratio": spec["r"] or None}  # fmt: skip
    return out


__all__ = ["BackendError", "RedisBackend", "parse_redis_url"]
