"""`Spool`: a local SQLite file that holds the enqueues the backend could not take, in order,
until a forwarder (`forwarder.py`) stores them.

Durability: the file is in WAL mode with ``synchronous=FULL`` (``?synchronous=normal`` in the
URL to trade the last commits on power loss for speed): a spooled enqueue returns only after
its commit is on disk, so it survives a kill -9 of the producer and a machine crash. Every
call runs on one thread of its own (the stdlib `sqlite3` blocks); the event loop never waits on
the disk. Several processes may share one spool file (a producer and its workers on a host):
writes take SQLite's write lock (``BEGIN IMMEDIATE``), and forwarding is safe to run in all of
them at once because the backend stores a job id at most once.

A row is one job exactly as the producer built it (id, payload, priority, tenant, batch,
idempotency key, gates); a delayed job keeps its absolute due time (this machine's clock), so
it is due when it would have been. ``grp`` ties together the jobs of one ``enqueue_many`` call:
they are forwarded in one backend call (all or none).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson

from .backends.base import NewJob
from .errors import BackendError, ConfigurationError
from .job import Job, JobState
from .limits import Gate
from .meta import decoded_meta
from .serializers import loads

T = TypeVar("T")
BUSY_TIMEOUT = 10.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  id         TEXT NOT NULL UNIQUE,
  grp        TEXT NOT NULL,
  queue      TEXT NOT NULL,
  tenant     TEXT,
  ikey       TEXT,
  due        REAL,
  spooled_at REAL NOT NULL,
  job        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spooled_ikey ON spooled (queue, ifnull(tenant, ''), ikey)
  WHERE ikey IS NOT NULL;
"""
_COLS = "seq, id, grp, due, spooled_at, job"


@dataclass(slots=True)
class Spooled:
    """One spooled job: the producer's `NewJob` and when it is due (epoch, None: now)."""

    seq: int
    grp: str
    job: NewJob
    due: float | None
    spooled_at: float

    def to_send(self, now: float) -> NewJob:
        """The job to send now: its delay is what is left of it."""
        self.job.delay = max(0.0, self.due - now) if self.due is not None else 0.0
        return self.job

    def as_job(self, now: float) -> Job:
        """The job as a producer sees it before it reaches the backend (``spooled=True``)."""
        j = self.job
        scheduled = self.due if self.due is not None and self.due > now else None
        return Job(
            j.id, j.queue, j.task, loads(j.payload), j.priority,
            JobState.SCHEDULED if scheduled else JobState.QUEUED, 0, j.max_attempts, 0,
            j.max_stalls, j.timeout, j.lease, tenant=j.tenant, batch=j.batch, workflow=j.workflow,
            parent=j.parent, idempotency_key=j.idempotency_key, created_at=self.spooled_at,
            scheduled_for=scheduled, spooled=True, meta=decoded_meta(j.meta),
        )  # fmt: skip


def _encode(j: NewJob) -> str:
    return orjson.dumps(
        [j.id, j.queue, j.task, j.payload, j.priority, j.max_attempts, j.max_stalls, j.timeout,
         j.lease, j.tenant, j.batch, j.workflow, j.parent, j.idempotency_key, j.flow,
         [[g.name, g.spec] for g in j.gates], j.meta]
    ).decode()  # fmt: skip


def _decode(row: tuple[Any, ...]) -> Spooled:
    seq, _, grp, due, at, data = row
    v = orjson.loads(data)
    nj = NewJob(*v[:9], 0.0, *v[9:15], gates=tuple(Gate(n, s) for n, s in v[15]))
    nj.meta = v[16] if len(v) > 16 else None  # rows spooled before meta existed have none
    return Spooled(seq, grp, nj, due, at)


def spool_path(url: str) -> tuple[str, str]:
    """``sqlite:///spool.db`` (relative) or ``sqlite:////abs/spool.db`` -> (path, synchronous)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "sqlite" or parts.netloc or not parts.path[1:]:
        raise ConfigurationError(
            f"spool must be a sqlite URL (sqlite:///spool.db or sqlite:////abs/spool.db), "
            f"got {url!r}"
        )
    sync = "FULL"
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key != "synchronous" or values[-1].upper() not in ("FULL", "NORMAL"):
            raise ConfigurationError(
                f"spool URL option {key}={values[-1]!r}: only synchronous=full|normal"
            )
        sync = values[-1].upper()
    return parts.path[1:], sync


class Spool:
    """The spool file. All methods are coroutines run on the spool's own thread; a failing
    file (disk full, not a spool) raises `BackendError` naming it."""

    def __init__(self, url: str) -> None:
        self.path, self._sync = spool_path(url)
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def opened(self) -> bool:
        return self._pool is not None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-spool")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Any, args: tuple[Any, ...]) -> Any:
        try:
            if self._conn is None:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._sync}")
                conn.executescript(_SCHEMA)
                self._conn = conn
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            raise BackendError(f"spool {self.path!r} failed: {exc}") from exc

    async def put(self, jobs: list[NewJob], grp: str, now: float) -> tuple[list[str], list[bool]]:
        """Spool jobs durably (all or none), in order. A job whose idempotency key a spooled job
        of the same (queue, tenant) holds is not spooled: that job's id comes back, created
        False. Returns (ids, created) in input order."""
        return await self._run(_put, jobs, grp, now)  # type: ignore[no-any-return]

    async def peek(self, limit: int) -> list[Spooled]:
        """The oldest spooled jobs, about ``limit`` of them, never part of a group."""
        return await self._run(_peek, limit)  # type: ignore[no-any-return]

    async def remove(self, ids: list[str]) -> None:
        """Forget jobs the backend stored. Idempotent."""
        await self._run(_remove, ids)

    async def find(self, job_id: str) -> Spooled | None:
        return await self._run(_find, job_id)  # type: ignore[no-any-return]

    async def depth(self) -> dict[str, int]:
        """Spooled jobs per queue."""
        return await self._run(_depth)  # type: ignore[no-any-return]

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.submit(self._close_conn).result()
            pool.shutdown()

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _put(
    conn: sqlite3.Connection, jobs: list[NewJob], grp: str, now: float
) -> tuple[list[str], list[bool]]:
    ids = [j.id for j in jobs]
    created = [True] * len(jobs)
    rows = []
    seen: dict[tuple[str, str, str], str] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i, j in enumerate(jobs):
            if j.idempotency_key is not None:
                key = (j.queue, j.tenant or "", j.idempotency_key)
                hit = seen.get(key) or _spooled_key(conn, key)
                if hit is not None:
                    ids[i], created[i] = hit, False
                    continue
                seen[key] = j.id
            due = now + j.delay if j.delay > 0 else None
            rows.append((j.id, grp, j.queue, j.tenant, j.idempotency_key, due, now, _encode(j)))
        conn.executemany(
            "INSERT INTO spooled (id, grp, queue, tenant, ikey, due, spooled_at, job) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ids, created


def _spooled_key(conn: sqlite3.Connection, key: tuple[str, str, str]) -> str | None:
    row = conn.execute(
        "SELECT id FROM spooled WHERE queue = ? AND ifnull(tenant, '') = ? AND ikey = ?", key
    ).fetchone()
    return None if row is None else str(row[0])


def _peek(conn: sqlite3.Connection, limit: int) -> list[Spooled]:
    rows = conn.execute(f"SELECT {_COLS} FROM spooled ORDER BY seq LIMIT ?", (limit,)).fetchall()
    if len(rows) == limit:  # the rest of the last group: a group is forwarded whole
        rows += conn.execute(
            f"SELECT {_COLS} FROM spooled WHERE grp = ? AND seq > ? ORDER BY seq",
            (rows[-1][2], rows[-1][0]),
        ).fetchall()
    return [_decode(r) for r in rows]


def _remove(conn: sqlite3.Connection, ids: list[str]) -> None:
    conn.execute(
        "DELETE FROM spooled WHERE id IN (SELECT value FROM json_each(?))",
        (orjson.dumps(ids).decode(),),
    )


def _find(conn: sqlite3.Connection, job_id: str) -> Spooled | None:
    row = conn.execute(f"SELECT {_COLS} FROM spooled WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _decode(row)


def _depth(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT queue, count(*) FROM spooled GROUP BY queue").fetchall())
