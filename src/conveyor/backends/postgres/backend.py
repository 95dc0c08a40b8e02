"""The PostgreSQL backend: psycopg 3 (async) with a connection pool per event loop.

URL: ``postgresql://user:pass@host:port/db?schema=conveyor`` (see `url` for the options). The
tables live in their own PostgreSQL schema, created and migrated on first use (`migrations`)
unless ``?migrate=false``. Every operation is one transaction on a pooled connection, most of
them one statement; the database's clock is the only clock. ``connection=``: `enqueue_jobs` and
`enqueue_batch` run on the caller's psycopg connection, inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from ...clock import Clock, HostClock
from ...errors import BackendError, BackendUnavailable, ConfigurationError
from ...fanin import ChildResult
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
    Listener,
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
from ..outcomes import finish_each
from . import admin, attempts, awaiting, events, fanin, leases, migrations, reads
from . import batches as bt
from . import enqueue as enq
from . import jobs as ops
from .connections import Connections
from .listener import PgListener
from .sql import JOB_COLS, Conn, Schema, row_to_job


class PostgresBackend(Connections):
    """`Backend` on PostgreSQL (see the module docstring)."""

    capabilities = Capabilities(cross_process=True, cross_host=True, blocking_wakeups=True,
                                transactional_enqueue=True)  # fmt: skip

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        super().__init__(url)
        self._clock: Clock = clock or HostClock()

    def now(self) -> float:
        return self._clock.now()

    # -- job transitions ------------------------------------------------------------------------

    async def enqueue_jobs(
        self,
        jobs: Sequence[NewJob],
        *,
        max_queued: Mapping[str, int] | None = None,
        connection: Any = None,
    ) -> EnqueueResult:
        if connection is not None:
            return await self._in_caller(connection, enq.enqueue, jobs, max_queued)
        if enq.plain(jobs, max_queued):  # one statement, one round trip
            return await self._call(self._op(enq.enqueue_plain), jobs, tx=False)
        return await self._call(self._op(enq.enqueue), jobs, max_queued)

    async def enqueue_batch(
        self,
        batch: NewBatch,
        jobs: Sequence[NewJob],
        *,
        max_queued: Mapping[str, int] | None = None,
        connection: Any = None,
    ) -> EnqueueResult:
        if connection is not None:
            return await self._in_caller(connection, bt.enqueue, batch, jobs, max_queued)
        return await self._call(self._op(bt.enqueue), batch, jobs, max_queued)

    async def settle_batches(self, queues: Sequence[str]) -> int:
        return 0  # callbacks fire in the transaction of the member that ended last

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        return await self._call(self._op(ops.claim), params, tx=False)

    async def _finish(self, outcomes: Sequence[Outcome]) -> list[str]:
        return await self._call(self._op(attempts.finish), outcomes)

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        if not outcomes:
            return []
        try:
            return await self._finish(outcomes)
        except BackendUnavailable:
            raise
        except (BackendError, ConfigurationError):
            return await finish_each(self._finish, outcomes)

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        plain = attempts.plain_args(outcomes) if outcomes else None
        if plain is None:
            lost = await self.finish_jobs(worker, outcomes)
            return lost, await self.claim_jobs(params)
        # The steady state: plain completions and the next claim in one round trip; what the
        # plain statement left (jobs of batches, children, flows, or not held) is finished
        # the full way after.
        acked: list[str] = []
        res = await self._call(self._op(ops.claim), params, (attempts.PLAIN_COMPLETE, plain),
                               acked, tx=False)  # fmt: skip
        done = set(acked)
        rest = [o for o in outcomes if o.job_id not in done]
        return (await self.finish_jobs(worker, rest) if rest else []), res

    async def release_jobs(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        return await self._call(self._op(leases.release), jobs)

    async def extend_leases(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[str]:
        return await self._call(self._op(leases.extend), jobs, tx=False)

    async def set_progress(
        self, job_id: str, token: int, worker: str, progress: dict[str, Any]
    ) -> bool:
        return await self._call(self._op(leases.set_progress), job_id, token, progress)

    async def cancel_job(self, job_id: str, *, tenant: str | None = None) -> Job:
        return await self._call(self._op(fanin.cancel), job_id, tenant)

    async def retry_job(
        self,
        job_id: str,
        *,
        tenant: str | None = None,
        max_queued: Mapping[str, int] | None = None,
    ) -> Job:
        return await self._call(self._op(ops.retry), job_id, tenant, max_queued)

    async def resume_job(
        self, job_id: str, data: str | None = None, *, tenant: str | None = None
    ) -> Job:
        return await self._call(self._op(fanin.resume), job_id, tenant, data)

    async def expire_awaiting(self) -> list[Recovered]:
        if not await self._call(self._op(awaiting.any_due), tx=False):
            return []
        return await self._call(self._op(fanin.expire))

    async def recover_expired(self) -> list[Recovered]:
        # Every worker runs this every maintenance pass: one read first (expired leases of
        # active or held attempts, through jobs_active / jobs_held), a transaction only if any.
        out: list[Recovered] = []
        if await self._call(self._op(leases.any_expired), tx=False):
            out = await self._call(self._op(fanin.recover))
        await self._call(self._op(reads.fold_counts), tx=False)  # the periodic fold
        return out

    async def read_children(self, parent_id: str, queue: str) -> list[ChildResult]:
        return await self._call(self._op(fanin.children), parent_id, tx=False)

    # -- reads ----------------------------------------------------------------------------------

    async def get_job(
        self, job_id: str, *, tenant: str | None = None, connection: Any = None
    ) -> Job | None:
        if connection is not None:  # a job enqueued in the caller's open transaction
            return await self._in_caller(connection, ops.get, job_id, tenant)
        return await self._call(self._op(ops.get), job_id, tenant, tx=False)

    async def list_jobs(self, params: ListParams) -> JobPage:
        return await self._call(self._op(reads.list_jobs), params, tx=False)

    async def batch_counts(self, batch: str, *, tenant: str | None = None) -> BatchCounts:
        return await self._call(self._op(reads.batch_counts), batch, tenant, read_only=True)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        return await self._call(self._op(reads.stats), queues)

    async def workflow_jobs(self, workflow: str, *, tenant: str | None = None) -> list[Job]:
        async def run(conn: Conn, s: Schema) -> list[Job]:
            cur = await conn.execute(
                s(f"SELECT * FROM (SELECT seq, {JOB_COLS} FROM {{s}}.jobs WHERE id = %(w)s "
                  f"AND workflow IS NULL UNION ALL SELECT seq, {JOB_COLS} FROM {{s}}.jobs "
                  "WHERE workflow = %(w)s) w ORDER BY seq"),
                {"w": workflow},
            )  # fmt: skip
            out = [row_to_job(r[1:]) for r in await cur.fetchall()]
            if tenant is not None and any(j.tenant != tenant for j in out):
                return []  # another tenant's workflow: as if it did not exist
            return out

        return await self._call(self._op(run), read_only=True)

    async def forward_handovers(self, queues: Sequence[str]) -> int:
        return 0  # next jobs are stored with the outcome

    # -- maintenance ----------------------------------------------------------------------------

    async def apply_retention(self, queue: str, rule: Retention) -> int:
        return await self._call(self._op(reads.apply_retention), queue, rule)

    async def cleanup(self, older_than: float, states: Sequence[JobState]) -> int:
        return await self._call(self._op(reads.cleanup), older_than, states)

    async def trim_events(self, rule: EventRetention) -> int:
        async def run(conn: Conn, s: Schema) -> int:
            return await events.trim(conn, s, await ops.now(conn), rule)

        return await self._call(self._op(run))

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
        await self._call(self._op(events.append), type.value, job_id, queue, task, tenant, data,
                         tx=False)  # fmt: skip

    async def read_events(
        self, since: str = EVENTS_OLDEST, limit: int = 1000, where: EventFilter | None = None
    ) -> EventPage:
        return await self._call(self._op(events.read), since, limit, where, read_only=True)

    async def last_event_cursor(self) -> str:
        return await self._call(self._op(events.last_cursor), tx=False)

    async def reserve_rate(self, name: str, interval: float, burst: int) -> float:
        return await self._call(self._op(admin.reserve_rate), name, interval, burst)

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        await self._call(self._op(admin.worker_heartbeat), info)

    async def remove_worker(self, worker: str) -> None:
        await self._call(self._op(admin.remove_worker), worker, tx=False)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self._call(self._op(admin.list_workers), tx=False)

    async def listen(self, queues: Sequence[str], callback: WakeCallback, worker: str) -> Listener:
        listener = PgListener(self.opts.conninfo, self.s.channel, queues, worker, callback)
        with contextlib.suppress(TimeoutError):  # a listener still connecting catches up later
            await asyncio.wait_for(listener.ready.wait(), 5.0)
        return listener

    # -- queue flags and API keys ---------------------------------------------------------------

    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        return await self._call(self._op(admin.set_paused), queue, paused)

    async def paused_queues(self) -> set[str]:
        return await self._call(self._op(admin.paused), tx=False)

    async def store_api_key(self, key: ApiKeyRecord) -> None:
        await self._call(self._op(admin.store_key), key, tx=False)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self._call(self._op(admin.get_key), key_id, tx=False)

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        return await self._call(self._op(admin.list_keys), tenant, tx=False)

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._call(self._op(admin.revoke_key), key_id)

    # -- schedules ------------------------------------------------------------------------------

    async def init_schedule(self, schedule: str, queue: str, tick: int) -> int:
        return await self._call(self._op(admin.init_schedule), schedule, queue, tick)

    async def claim_tick(self, claim: TickClaim) -> TickOutcome:
        return await self._call(self._op(admin.claim_tick), claim)

    async def schedule_states(self, items: Sequence[tuple[str, str]]) -> dict[str, ScheduleState]:
        return await self._call(self._op(admin.schedule_states), items, read_only=True)

    # -- migrations (conveyor migrate) ----------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Create or migrate the schema now; the steps applied (empty: up to date)."""
        return await self._call(lambda conn: migrations.migrate(conn, self.s.name), tx=False)


__all__ = ["PostgresBackend"]
