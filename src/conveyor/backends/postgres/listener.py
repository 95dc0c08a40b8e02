"""LISTEN/NOTIFY wake-ups: one dedicated connection per listening worker.

Transitions that make work ready send ``pg_notify(<channel>, 'w:<queue>')`` inside their own
transaction, so the notification is delivered when (and only if) it commits: a transactional
enqueue that rolls back wakes nobody. A cancel of an active job sends ``c:<worker>``. The
listener blocks on its socket (no polling); when the connection drops it reconnects with a
backoff and reports ``work`` once (notifications sent meanwhile were lost). A connection that
dies silently (a network path dropped, the server's process stopped) raises nothing: after
`PING_EVERY` seconds without a notification the listener asks the server for a reply and, with
none within `PING_TIMEOUT`, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import psycopg
from psycopg import sql

from ..base import WakeCallback

log = logging.getLogger("conveyor.postgres")

PING_EVERY = 10.0  # seconds without a notification before the listener checks its connection
PING_TIMEOUT = 5.0  # seconds the server has to answer that check


class PgListener:
    def __init__(
        self,
        conninfo: str,
        channel: str,
        queues: Sequence[str],
        worker: str,
        callback: WakeCallback,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._work = {f"w:{q}" for q in queues}
        self._cancel = f"c:{worker}"
        self._callback = callback
        self._conn: psycopg.AsyncConnection[object] | None = None
        self.ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="conveyor-pg-listen")

    def idle(self, idle: bool) -> None:
        """Nothing to do: a notification reaches every listener, busy or idle."""

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    self._conn = conn
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.ready.set()
                    # What was sent before LISTEN (while away, or while `listen()` gave up
                    # waiting for a first connection) reaches nobody: look once.
                    self._callback("work")
                    delay = 0.05
                    await self._follow(conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("postgres listener lost its connection (%s); reconnecting",
                            type(exc).__name__)  # fmt: skip
            finally:
                self._conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _follow(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Report notifications until the connection fails; a quiet spell ends in a check that
        the server still answers (TimeoutError when it does not)."""
        while True:
            async for note in conn.notifies(timeout=PING_EVERY):
                if note.payload in self._work:
                    self._callback("work")
                elif note.payload == self._cancel:
                    self._callback("cancel")
            async with asyncio.timeout(PING_TIMEOUT):
                await conn.execute("SELECT 1")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
