"""The SQLite backend: one file, WAL, safe for many worker processes on one machine.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, with optional query
parameters ``synchronous=normal|full`` (default normal: durable across process crashes; ``full``
also across power loss) and ``busy_timeout`` (seconds a writer waits for the lock before
`BackendLocked`; default 10).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ...clock import Clock, HostClock
from ...errors import BackendCorrupt, BackendLocked, BackendUnavailable
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
from . import admin, attempts, awaiting, fanin, gates, migrations, ops, schedules
from . import batches as bt
from . import maintenance as m
from .executor import DbThread
from .migrations import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported (tests pin it)
from .notify import Notifier, SocketListener
from .url import parse_sqlite_url
from .workflows import SqliteWorkflows


class SqliteBackend(SqliteWorkflows):
    """`Backend` on one SQLite file. All statements run on one thread per process (`DbThread`)."""

    capabilities = Capabilities(cross_process=True, cross_host=False, blocking_wakeups=True)

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = url
        self.path, self._opts = parse_sqlite_url(url)
        self._clock: Clock = clock or HostClock()
        self._notifier = Notifier(self.path)
        self._db: DbThread | None = None
        self._open_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise BackendUnavailable(
                f"cannot open SQLite file {self.path}: {directory} does not exist"
            )
        conn = sqlite3.connect(
            self.path,
            timeout=self._opts["busy_timeout"],
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        return conn

    def _init(self, conn: sqlite3.Connection) -> None:
        # Refuse another application's file before changing anything in it (WAL is persistent).
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        ours = {"conveyor_meta", "jobs", "events", "counts", "rates", "workers", "sqlite_sequence",
                "gates", "flows", "costs", "paused_queues", "api_keys", "schedules",
                "batches"}  # fmt: skip
        if "conveyor_meta" not in tables and tables - ours:
            raise BackendCorrupt(
                f"SQLite file {self.path} holds other tables ({', '.join(sorted(tables))}): "
                "not a conveyor database"
            )
        mode = self._journal_wal(conn)
        if str(mode).lower() != "wal":
            raise BackendCorrupt(f"SQLite file {self.path} cannot use WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous = {self._opts['synchronous']}")
        conn.execute("PRAGMA cache_size = -32000")
        conn.execute("PRAGMA temp_store = MEMORY")
        migrations.install(conn, self.path, "conveyor_meta" in tables)

    def _journal_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL. While another process creates the schema this pragma can fail with
        "database is locked" without waiting (it does not go through the busy handler), so
        retry within the busy timeout."""
        deadline = time.monotonic() + self._opts["busy_timeout"]
        delay = 0.005
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def open(self) -> None:
        if self._db is None:
            await asyncio.to_thread(self._open_blocking)

    def _open_blocking(self) -> None:
        with self._open_lock:
            if self._db is not None:
                return
            db = DbThread(self._connect, self.path, self._clock, on_commit=self._notifier.notify,
                          busy_timeout=self._opts["busy_timeout"])  # fmt: skip
            db.start(self._init)
            self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._notifier.close()

    def now(self) -> float:
        return self._clock.now()

    def _run(self, fn: Any, *args: Any, write: bool = True, notify: bytes | None = None) -> Any:
        if self._db is None:
            raise BackendUnavailable(f"SQLite backend for {self.path} is not open")
        return self._db.submit(lambda conn, now: fn(conn, now, *args), write=write, notify=notify)

    def _read(self, fn: Any, *args: Any) -> Any:
        if self._db is None:
            raise BackendUnavailable(f"SQLite backend for {self.path} is not open")
        return self._db.submit(lambda conn, now: fn(conn, *args), write=False)

    # -- job transitions --------------------------------------------------------------------------

    async def enqueue_jobs(
        self, jobs: Sequence[NewJob], *, max_queued: Mapping[str, int] | None = None
    ) -> EnqueueResult:
        result: EnqueueResult = await self._run(ops.enqueue, jobs, max_queued, notify=b"w")
        return result

    async def enqueue_batch(
        self,
        batch: NewBatch,
        jobs: Sequence[NewJob],
        *,
        max_queued: Mapping[str, int] | None = None,
    ) -> EnqueueResult:
        result: EnqueueResult = await self._run(bt.enqueue, batch, jobs, max_queued, notify=b"w")
        return result

    async def settle_batches(self, queues: Sequence[str]) -> int:
        return 0  # callbacks fire in the transaction of the member that ended last

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        result: ClaimResult = await self._run(ops.claim, params)
        return result

    async def _finish(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        lost, woke = await self._run(attempts.finish, worker, outcomes)
        if woke:  # concurrency slots freed: workers elsewhere may claim set-aside flows
            self._notifier.notify(b"w")
        return lost  # type: ignore[no-any-return]

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        try:
            return await self._finish(worker, outcomes)
        except (BackendUnavailable, BackendLocked):
            raise
        except Exception:
            return await finish_each(lambda one: self._finish(worker, one), outcomes)

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        # Submitted back to back, both land in the same group-commit transaction, each in its
        # own savepoint: a claim that committed is returned even when the finish failed.
        finished = self._run(attempts.finish, worker, outcomes)
        claimed = self._run(ops.claim, params)
        done, got = await asyncio.gather(finished, claimed, return_exceptions=True)
        if isinstance(got, BaseException):
            raise got
        if isinstance(done, (BackendUnavailable, BackendLocked)):
            raise done  # nothing of the round committed
        if isinstance(done, BaseException):
            return await finish_each(lambda one: self._finish(worker, one), outcomes), got
        lost, woke = done
        if woke:
            self._notifier.notify(b"w")
        return lost, got

    async def release_jobs(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        n: int = await self._run(attempts.release, worker, jobs, notify=b"w")
        return n

    async def extend_leases(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[str]:
        lost: list[str] = await self._run(attempts.extend, worker, jobs)
        return lost

    async def set_progress(
        self, job_id: str, token: int, worker: str, progress: dict[str, Any]
    ) -> bool:
        ok: bool = await self._run(attempts.set_progress, job_id, token, worker, progress)
        return ok

    async def cancel_job(self, job_id: str, *, tenant: str | None = None) -> Job:
        job: Job = await self._run(fanin.cancel, job_id, tenant, notify=b"c")
        self._notifier.notify(b"w")  # a cancelled active job may have freed a concurrency slot
        return job

    async def retry_job(
        self,
        job_id: str,
        *,
        tenant: str | None = None,
        max_queued: Mapping[str, int] | None = None,
    ) -> Job:
        job: Job = await self._run(ops.retry, job_id, tenant, max_queued, notify=b"w")
        return job

    async def resume_job(
        self, job_id: str, data: str | None = None, *, tenant: str | None = None
    ) -> Job:
        job: Job = await self._run(fanin.resume, job_id, tenant, data, notify=b"w")
        return job

    async def expire_awaiting(self) -> list[Recovered]:
        # Every worker sweeps every pass: a read first, so an idle sweep takes no write lock.
        if not await self._read(awaiting.any_due, self.now()):
            return []
        out: list[Recovered] = await self._run(fanin.expire)
        if out:  # resumed, a child's end may have resumed its parent, or callbacks were enqueued
            self._notifier.notify(b"w")
        return out

    async def recover_expired(self) -> list[Recovered]:
        out: list[Recovered] = await self._run(fanin.recover)
        if out:
            self._notifier.notify(b"w")
        return out

    async def read_children(self, parent_id: str, queue: str) -> list[ChildResult]:
        out: list[ChildResult] = await self._read(fanin.children, parent_id)
        return out

    # -- reads ------------------------------------------------------------------------------------

    async def get_job(
        self, job_id: str, *, tenant: str | None = None, connection: Any = None
    ) -> Job | None:
        job: Job | None = await self._read(ops.get, job_id, tenant)
        return job

    async def list_jobs(self, params: ListParams) -> JobPage:
        page: JobPage = await self._read(m.list_jobs, params)
        return page

    async def batch_counts(self, batch: str, *, tenant: str | None = None) -> BatchCounts:
        counts: BatchCounts = await self._run(m.batch_counts, batch, tenant, write=False)
        return counts

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        out: dict[str, QueueStats] = await self._run(m.stats, queues, write=False)
        return out

    # -- maintenance ------------------------------------------------------------------------------

    async def apply_retention(self, queue: str, rule: Retention) -> int:
        n: int = await self._run(m.apply_retention, queue, rule)
        return n

    async def cleanup(self, older_than: float, states: Sequence[JobState]) -> int:
        n: int = await self._run(m.cleanup, older_than, states)
        return n

    async def trim_events(self, rule: EventRetention) -> int:
        n: int = await self._run(m.trim_events, rule)
        return n

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
        await self._run(m.append_event, type.value, job_id, queue, task, tenant, data)

    async def read_events(
        self, since: str = EVENTS_OLDEST, limit: int = 1000, where: EventFilter | None = None
    ) -> EventPage:
        page: EventPage = await self._read(m.read_events, since, limit, where)
        return page

    async def last_event_cursor(self) -> str:
        cursor: str = await self._read(m.last_event_cursor)
        return cursor

    async def reserve_rate(self, name: str, interval: float, burst: int) -> float:
        wait: float = await self._run(gates.reserve_rate, name, interval, burst)
        return wait

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        await self._run(m.worker_heartbeat, info)

    async def remove_worker(self, worker: str) -> None:
        await self._run(m.remove_worker, worker)

    async def list_workers(self) -> list[WorkerInfo]:
        out: list[WorkerInfo] = await self._run(m.list_workers, write=False)
        return out

    async def listen(self, queues: Sequence[str], callback: WakeCallback, worker: str) -> Listener:
        return SocketListener(self.path, worker, callback)

    # -- queue flags and API keys (admin.py) ------------------------------------------------------

    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        # A resume wakes idle workers (the datagram is sent after the commit, as an enqueue's).
        changed: bool = await self._run(admin.set_paused, queue, paused,
                                        notify=None if paused else b"w")  # fmt: skip
        return changed

    async def paused_queues(self) -> set[str]:
        out: set[str] = await self._read(admin.paused)
        return out

    async def store_api_key(self, key: ApiKeyRecord) -> None:
        await self._run(admin.store_key, key)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        key: ApiKeyRecord | None = await self._read(admin.get_key, key_id)
        return key

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        keys: list[ApiKeyRecord] = await self._read(admin.list_keys, tenant)
        return keys

    async def revoke_api_key(self, key_id: str) -> bool:
        changed: bool = await self._run(admin.revoke_key, key_id)
        return changed

    # -- schedules (schedules.py) -----------------------------------------------------------------

    async def init_schedule(self, schedule: str, queue: str, tick: int) -> int:
        last: int = await self._run(schedules.init, schedule, queue, tick)
        return last

    async def claim_tick(self, claim: TickClaim) -> TickOutcome:
        # A fired job wakes idle workers (the datagram is sent after the commit).
        out: TickOutcome = await self._run(schedules.claim, claim,
                                           notify=None if claim.job is None else b"w")  # fmt: skip
        return out

    async def schedule_states(self, items: Sequence[tuple[str, str]]) -> dict[str, ScheduleState]:
        out: dict[str, ScheduleState] = await self._read(schedules.states, items)
        return out
