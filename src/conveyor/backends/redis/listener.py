"""Wake-ups for Redis workers: block on the queue's marker (BZPOPMIN), never poll.

Producers and scripts that make work ready `ZADD <queue>:marker 0 w`; a claim that leaves jobs
behind re-adds it, so blocked workers wake one after another. Cancelling an active job adds
``c`` to ``<queue>:wk:<worker>``, which the holding worker blocks on beside the marker. A worker
that is busy (claiming on its own as slots free) blocks only on its own key, so it does not
steal markers from idle workers. One blocking connection per queue (Cluster: one slot each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..base import WakeCallback

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")
BLOCK_SECONDS = 5.0
SOCKET_MARGIN = 5.0  # the listener's socket timeout is BLOCK_SECONDS + this


class RedisListener:
    def __init__(
        self, backend: RedisBackend, queues: Sequence[str], callback: WakeCallback, worker: str
    ) -> None:
        self._backend = backend
        self._callback = callback
        self._worker = worker
        self._idle = True
        self._closing = False
        self._watching_marker = False
        self._clients: list[Any] = []
        self._pokes: set[asyncio.Future[None]] = set()
        self._tasks = [
            asyncio.create_task(self._run(q), name=f"conveyor-redis-listen-{q}") for q in queues
        ]

    def idle(self, idle: bool) -> None:
        """The worker wants markers (idle) or only its cancel signals (busy)."""
        if idle and not self._idle:
            self._idle = True
            if self._watching_marker:
                return  # the blocked BZPOPMIN already includes the marker
            task = asyncio.ensure_future(self._poke())
            self._pokes.add(task)
            task.add_done_callback(self._pokes.discard)
        else:
            self._idle = idle

    async def _poke(self) -> None:
        # Unblock our own BZPOPMIN so it starts watching the marker too.
        with contextlib.suppress(RedisError, OSError):
            client = self._backend._client()
            for q in {*self._queues()}:
                await client.zadd(self._backend.key(q, f"wk:{self._worker}"), {"p": 0})

    def _queues(self) -> list[str]:
        return [t.get_name().removeprefix("conveyor-redis-listen-") for t in self._tasks]

    async def _run(self, queue: str) -> None:
        # The socket must outlast a blocking pop: redis-py's default timeout (5 s) equals it,
        # and every idle pop ended in a read timeout and a reconnect.
        timeout = BLOCK_SECONDS + SOCKET_MARGIN
        client = (
            self._backend.make_client(single_connection_client=True, socket_timeout=timeout)
            if not self._backend.cluster
            else self._backend.make_client(socket_timeout=timeout)
        )
        self._clients.append(client)
        marker = self._backend.key(queue, "marker")
        mine = self._backend.key(queue, f"wk:{self._worker}")
        delay = 0.05
        while not self._closing:
            keys = [marker, mine] if self._idle else [mine]
            self._watching_marker = self._idle
            try:
                res = await client.bzpopmin(keys, timeout=BLOCK_SECONDS)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                log.warning("redis listener for %s: %s; reconnecting in %.2fs", queue, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if res is None:
                continue
            key, member, _ = res
            if key == mine:
                if member == "c":
                    self._callback("cancel")
                # "p": a poke to re-read the idle flag
            else:
                self._callback("work")

    async def close(self) -> None:
        self._closing = True  # redis-py may turn our cancel() into a ConnectionError
        # Unblock each BZPOPMIN with a poke so its loop sees the flag and ends by itself: a
        # cancel() that lands inside redis-py's blocked read is sometimes lost, and the loop
        # would sit out the rest of BLOCK_SECONDS.
        await self._poke()
        _, pending = await asyncio.wait(self._tasks, timeout=1.0)
        for t in pending:
            t.cancel()
        for c in self._clients:  # a dropped connection ends a read the cancel did not reach
            with contextlib.suppress(Exception):
                await c.aclose()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            client = self._backend._client()
            for q in self._queues():
                await client.delete(self._backend.key(q, f"wk:{self._worker}"))
