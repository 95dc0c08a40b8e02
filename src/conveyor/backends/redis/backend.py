"""The Redis backend: every state transition is one Lua script (see ``lua/``), every key of a
queue shares the hash tag ``{queue}`` so a queue lives in one Redis Cluster slot.

URL forms: ``redis://host:port/db``, ``rediss://…``, ``unix:///path/redis.sock?db=0``, and
``redis+cluster://host:port`` for Redis Cluster. Options: see `connection` (``prefix``, default
``cv``, namespaces all keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...clock import Clock
from ...errors import BackendError, BackendUnavailable
from ...job import Job, JobState
from ..base import (
    EVENTS_OLDEST,
    ApiKeyRecord,
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
    NewBatch,
    NewJob,
    Outcome,
    QueueStats,
    Recovered,
    Retention,
    ScheduleState,
    TickClaim,
    TickOutcome,
    WakeCallback,
    WorkerInfo,
)
from . import admin, producer, reads, registry, retention, schedules, steering
from . import batches as bt
from .attempts import Attempts
from .connection import Gate, deadline, make_client, operations, redis_options, unavailable
from .events import EventLog
from .fanin import RedisFanIn
from .listener import RedisListener
from .scripts import SCRIPTS, evalsha
from .workflows import RedisWorkflows

log = logging.getLogger("conveyor.redis")
CLOSE_TIMEOUT = 5.0


@operations  # connection errors -> BackendUnavailable; cluster: wait for a connection
class RedisBackend(RedisWorkflows, RedisFanIn):
    """`Backend` on Redis or Redis Cluster."""

    capabilities = Capabilities(cross_process=True, cross_host=True, blocking_wakeups=True)

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = url
        self.options = redis_options(url)
        self.cluster, self.prefix = self.options.cluster, self.options.prefix
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()  # loops in other threads: app.sync
        self._attempts = Attempts(self)
        self._offset = 0.0  # Redis TIME - local time, refreshed by every script that returns now
        self._opened = False
        self._known_queues: set[str] = set()
        self.old_registry_gone = False
        self._events = EventLog(self)

    # -- connections ----------------------------------------------------------------------------

    def make_client(self, *, single: bool = False, block: float | None = None) -> Any:
        """A client with a pool of its own (see `connection.make_client`)."""
        return make_client(self.options, single=single, block=block)

    def _client(self) -> Any:
        # redis-py asyncio connections belong to one event loop (the app's, the sync facade's).
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            with self._clients_lock:
                client = self._clients.get(loop)
                if client is None:
                    client = self._clients[loop] = self.make_client()
                    if self.cluster:
                        self._gates[loop] = Gate(self.options)
        return client

    def gate(self) -> Gate | None:
        """Cluster: the event loop's turns at the connections (see `connection.Gate`)."""
        if not self.cluster:
            return None
        self._client()
        return self._gates[asyncio.get_running_loop()]

    def key(self, queue: str, suffix: str = "") -> str:
        return f"{self.prefix}:{{{queue}}}:{suffix}"

    async def open(self) -> None:
        client = self._client()
        o = self.options
        try:
            with deadline(o, o.deadline):
                async with asyncio.timeout(o.deadline):
                    await client.ping()
                    if not self._opened:
                        await self._check_config(client)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach Redis at {o.where}: {exc}") from exc
        self._opened = True

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
        with self._clients_lock:
            clients = list(self._clients.items())
            self._clients = weakref.WeakKeyDictionary()
            self._gates = weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        for owner, client in clients:
            with contextlib.suppress(Exception):
                if owner is loop:
                    await client.aclose()
                elif owner.is_running():  # another thread's loop (the sync facade's)
                    done = asyncio.run_coroutine_threadsafe(client.aclose(), owner)
                    await asyncio.wait_for(asyncio.wrap_future(done), CLOSE_TIMEOUT)

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
            raise unavailable(self.options, exc) from exc

    async def _queues(self) -> list[str]:
        return sorted(await self._client().smembers(f"{self.prefix}:queues"))

    # -- job transitions --------------------------------------------------------------------------

    async def enqueue_jobs(
        self, jobs: Sequence[NewJob], *, max_queued: Mapping[str, int] | None = None
    ) -> EnqueueResult:
        return await producer.enqueue_jobs(self, jobs, max_queued)

    async def enqueue_batch(
        self,
        batch: NewBatch,
        jobs: Sequence[NewJob],
        *,
        max_queued: Mapping[str, int] | None = None,
    ) -> EnqueueResult:
        return await bt.enqueue_batch(self, batch, jobs, max_queued)

    async def settle_batches(self, queues: Sequence[str]) -> int:
        return await bt.settle(self, queues)

    # -- the worker's attempts (attempts.py) ------------------------------------------------------

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        return await self._attempts.claim_jobs(params)

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        return await self._attempts.finish_jobs(worker, outcomes)

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        return await self._attempts.finish_and_claim(worker, outcomes, params)

    async def release_jobs(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        return await self._attempts.release_jobs(worker, jobs)

    async def extend_leases(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[str]:
        return await self._attempts.extend_leases(worker, jobs)

    async def set_progress(
        self, job_id: str, token: int, worker: str, progress: dict[str, Any]
    ) -> bool:
        return await self._attempts.set_progress(job_id, token, worker, progress)

    async def _queue_of(self, job_id: str, queues: list[str] | None = None) -> str | None:
        client = self._client()
        for q in queues if queues is not None else await self._queues():
            if await client.exists(self.key(q, f"j:{job_id}")):
                return q
        return None

    async def _pipeline(self, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        """Run script calls in one round trip; a NOSCRIPT result is re-run (loading it). Other
        error replies are returned in place: one failed call must not hide the others' results
        (a claim that committed is never discarded)."""
        if len(calls) == 1:  # e.g. an idle worker's claim: a pipeline object costs ~50 us more
            name, queue, args = calls[0]
            try:
                return [await self._eval(name, queue, *args)]
            except ResponseError as exc:
                return [exc]
        client = self._client()
        pipe = client.pipeline(transaction=False)
        for name, queue, args in calls:
            pipe.execute_command("EVALSHA", SCRIPTS[name].sha, 1, self.key(queue), *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise unavailable(self.options, exc) from exc
        reloaded = [i for i, res in enumerate(results) if isinstance(res, NoScriptError)]
        for i in reloaded:
            name, queue, args = calls[i]
            try:
                results[i] = await self._eval(name, queue, *args)
            except ResponseError as exc:
                results[i] = exc
        if reloaded:
            # A claim (or peek) that ran before a call ahead of it (run again just now) did not
            # see that call's effects, e.g. a retry it scheduled: it reports work due now, so
            # the worker claims again instead of sleeping past that due time.
            for j in range(reloaded[0] + 1, len(calls)):
                if (
                    calls[j][0] in ("claim", "peek")
                    and j not in reloaded
                    and isinstance(results[j], list)
                ):
                    results[j][1] = results[j][0]
        return results

    async def cancel_job(self, job_id: str, *, tenant: str | None = None) -> Job:
        job = await steering.steer(self, "cancel", job_id, tenant)
        # Fan-in: the cancelled job's settle (a child) or its children's cancels (a parent)
        # wait in its queue's outbox: deliver them now rather than at the next worker sweep.
        await self.forward_handovers([job.queue])
        return job

    async def retry_job(
        self,
        job_id: str,
        *,
        tenant: str | None = None,
        max_queued: Mapping[str, int] | None = None,
    ) -> Job:
        return await steering.steer(self, "retry", job_id, tenant, max_queued)

    async def resume_job(
        self, job_id: str, data: str | None = None, *, tenant: str | None = None
    ) -> Job:
        return await steering.steer(self, "resume", job_id, tenant, data)

    async def recover_expired(self) -> list[Recovered]:
        return await steering.sweep(self, "recover")

    async def expire_awaiting(self) -> list[Recovered]:
        return await steering.sweep(self, "expire")

    # -- reads ------------------------------------------------------------------------------------

    async def get_job(
        self, job_id: str, *, tenant: str | None = None, connection: Any = None
    ) -> Job | None:
        return await reads.get_job(self, job_id, tenant=tenant)

    async def list_jobs(self, params: ListParams) -> JobPage:
        return await reads.list_jobs(self, params)

    async def batch_counts(self, batch: str, *, tenant: str | None = None) -> BatchCounts:
        recorded = await bt.counts(self, batch, tenant)
        if recorded is not None:
            return recorded
        return await reads.batch_counts(self, batch, tenant)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        return await reads.stats(self, queues)

    # -- maintenance ------------------------------------------------------------------------------

    async def apply_retention(self, queue: str, rule: Retention) -> int:
        return await retention.apply(self, queue, rule)

    async def cleanup(self, older_than: float, states: Sequence[JobState]) -> int:
        return await retention.cleanup(self, older_than, states)

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
        self._attempts.held.pop(worker, None)
        self._attempts.last_event.pop(worker, None)

    async def list_workers(self) -> list[WorkerInfo]:
        return await registry.live(self)

    async def listen(
        self, queues: Sequence[str], callback: WakeCallback, worker: str
    ) -> RedisListener:
        return RedisListener(self, queues, callback, worker)

    # -- queue flags and API keys (admin.py) ------------------------------------------------------

    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        return await admin.set_queue_paused(self, queue, paused)

    async def paused_queues(self) -> set[str]:
        return await admin.paused_queues(self)

    async def store_api_key(self, key: ApiKeyRecord) -> None:
        await admin.store_api_key(self, key)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await admin.get_api_key(self, key_id)

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        return await admin.list_api_keys(self, tenant)

    async def revoke_api_key(self, key_id: str) -> bool:
        return await admin.revoke_api_key(self, key_id)

    # -- schedules (schedules.py) -----------------------------------------------------------------

    async def init_schedule(self, schedule: str, queue: str, tick: int) -> int:
        return await schedules.init_schedule(self, schedule, queue, tick)

    async def claim_tick(self, claim: TickClaim) -> TickOutcome:
        return await schedules.claim_tick(self, claim)

    async def schedule_states(self, items: Sequence[tuple[str, str]]) -> dict[str, ScheduleState]:
        return await schedules.schedule_states(self, items)


__all__ = ["BackendError", "RedisBackend"]
