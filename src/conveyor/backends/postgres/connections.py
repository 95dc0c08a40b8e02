"""The PostgreSQL backend's connections: a psycopg pool per event loop, opened (and the schema
migrated) on first use, one transaction per operation with deadlocks retried and driver errors
translated, and the caller's connection for a transactional enqueue."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...errors import BackendError, BackendUnavailable, ConfigurationError
from . import migrations
from .sql import Conn, Schema, SyncConn
from .url import parse_postgres_url, redact

T = TypeVar("T")
DEADLOCK_RETRIES = 3


class Connections:
    """Pools, transactions and the caller's connection; `PostgresBackend` builds on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opts = parse_postgres_url(url)
        self.s = Schema(self.opts.schema)
        # One pool per event loop (the app's, the sync facade's): connections belong to a loop.
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool] = (
            weakref.WeakKeyDictionary()
        )
        self._ready = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def _pool(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(
                self.opts.conninfo, min_size=self.opts.pool_min, max_size=self.opts.pool_max,
                timeout=self.opts.pool_timeout, kwargs={"autocommit": True}, open=False,
                name=f"conveyor-{self.opts.schema}",
            )  # fmt: skip
            self._pools[loop] = pool
            try:
                await pool.open(wait=self.opts.pool_min > 0, timeout=self.opts.pool_timeout)
            except (PoolTimeout, psycopg.Error) as exc:
                del self._pools[loop]
                await pool.close()
                raise BackendUnavailable(f"cannot connect to {redact(self.url)}: {exc}") from exc
        return pool

    async def open(self) -> None:
        if self._ready:
            await self._pool()
            return
        try:
            psycopg.conninfo.conninfo_to_dict(self.opts.conninfo)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"bad postgres URL {redact(self.url)}: {exc}") from None

        async def setup(conn: Any) -> None:
            if self.opts.migrate:
                await migrations.migrate(conn, self.s.name)
            else:
                await migrations.check(conn, self.s.name)

        await self._call(setup, tx=False)
        self._ready = True

    async def close(self) -> None:
        pools = list(self._pools.items())
        self._pools.clear()
        loop = asyncio.get_running_loop()
        for owner, pool in pools:
            if owner is loop:
                await pool.close()
            elif not owner.is_closed() and owner.is_running():
                fut = asyncio.run_coroutine_threadsafe(pool.close(), owner)
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(fut)
        self._ready = False

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = await self._pool()
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise BackendUnavailable(f"no free connection to {redact(self.url)}: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise BackendUnavailable(f"{redact(self.url)}: {exc}".strip()) from exc

    async def _call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, tx: bool = True, read_only: bool = False
    ) -> T:
        """Run ``fn(conn, *args)`` on a pooled connection, in a transaction unless ``tx`` is
        False (one statement: autocommit is its own transaction)."""
        for attempt in range(DEADLOCK_RETRIES + 1):
            async with self._conn() as conn:
                try:
                    if not tx:
                        return await fn(conn, *args)
                    async with conn.transaction():
                        if read_only:  # one snapshot for every statement of the read
                            await conn.execute(
                                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
                            )
                        return await fn(conn, *args)
                except (
                    psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure,
                ) as exc:
                    # Rolled back as a whole (e.g. a cancel of a parent racing its children's
                    # completions, which lock the same rows in the other order): run it again.
                    if attempt == DEADLOCK_RETRIES:
                        raise BackendError(
                            f"postgres: {type(exc).__name__} {attempt + 1} times in a row: {exc}"
                        ) from exc
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    raise
                except psycopg.Error as exc:
                    raise BackendError(f"postgres: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _op(self, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        s = self.s

        async def bound(conn: Conn, *args: Any) -> T:
            return await fn(conn, s, *args)

        return bound

    async def _in_caller(self, connection: Any, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a producer operation on the caller's connection, in the caller's transaction (a
        savepoint when one is open, so a refused enqueue leaves the caller's work intact; a
        transaction of its own when the connection is in autocommit mode)."""
        if not self._ready:
            await self.open()
        if isinstance(connection, psycopg.Connection | psycopg.AsyncConnection) and (
            connection.info.transaction_status is psycopg.pq.TransactionStatus.INERROR
        ):  # no savepoint can be opened there: say so rather than psycopg's rollback noise
            raise BackendError(
                "connection= is in a failed transaction (one of its statements raised): roll "
                "it back before enqueueing; nothing was enqueued"
            )
        if isinstance(connection, psycopg.AsyncConnection):
            async with connection.transaction():
                return await fn(connection, self.s, *args)
        if isinstance(connection, psycopg.Connection):
            with connection.transaction():
                return await fn(SyncConn(connection), self.s, *args)
        raise ConfigurationError(
            f"connection= takes a psycopg 3 Connection or AsyncConnection, got "
            f"{type(connection).__name__}"
        )
