"""One dedicated thread per process that owns the SQLite connection.

Every blocking sqlite3 call runs here, never on an event loop. Operations queue up while the
thread is busy and the next round runs all of them in **one** `BEGIN IMMEDIATE` transaction
(group commit), each inside its own SAVEPOINT so one failing operation rolls back alone and
reports its own error. Results are handed back to each caller's event loop in one
`call_soon_threadsafe` per loop per round. The round's write lock is taken by `writelock` (a
fast poll, not SQLite's backing-off busy handler, so other processes' writers cannot starve it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...clock import Clock
from ...errors import BackendCorrupt, BackendError, BackendLocked, BackendUnavailable, ConveyorError
from .writelock import begin_immediate, is_locked

log = logging.getLogger("conveyor.sqlite")
T = TypeVar("T")
Op = Callable[[sqlite3.Connection, float], Any]
MAX_ROUND = 512


@dataclass(slots=True)
class _Item:
    fn: Op
    write: bool
    future: asyncio.Future[Any]
    notify: bytes | None


def translate(exc: BaseException, path: str) -> BaseException:
    """Map a sqlite3 error to conveyor's tree (callers raise it ``from`` the original)."""
    if isinstance(exc, ConveyorError):
        return exc
    text = str(exc)
    if is_locked(exc):
        return BackendLocked(
            f"SQLite file {path} stayed locked by another process past the busy timeout ({text})"
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return BackendCorrupt(
            f"SQLite file {path} is not a conveyor database or is damaged ({text})"
        )
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return BackendUnavailable(f"cannot open SQLite file {path} ({text})")
    if isinstance(exc, sqlite3.Error):
        return BackendError(f"SQLite error on {path}: {text}")
    return exc


def _deliver(batch: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for fut, value, ok in batch:
        if fut.done():  # the caller was cancelled meanwhile
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class DbThread:
    """Owns one sqlite3 connection on one thread; runs submitted operations in group commits."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        path: str,
        clock: Clock,
        on_commit: Callable[[bytes], None] | None = None,
        busy_timeout: float = 10.0,
    ) -> None:
        self._connect = connect
        self._path = path
        self._clock = clock
        self._busy_timeout = busy_timeout  # seconds a round waits for the write lock
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._closed = False

    def start(self, init: Callable[[sqlite3.Connection], None]) -> None:
        """Start the thread, open the connection and run ``init`` (schema); raise its error."""
        self._thread = threading.Thread(
            target=self._main, args=(init,), name="conveyor-sqlite", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    def submit(
        self, fn: Op, *, write: bool = True, notify: bytes | None = None
    ) -> asyncio.Future[Any]:
        """Queue ``fn(conn, now)``; the returned future resolves on the caller's loop."""
        if self._closed:
            raise BackendUnavailable(f"SQLite backend for {self._path} is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(_Item(fn, write, fut, notify))
        return fut

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- the thread ---------------------------------------------------------------------------

    def _main(self, init: Callable[[sqlite3.Connection], None]) -> None:
        try:
            self._conn = self._connect()
            init(self._conn)
        except BaseException as exc:  # reported to start()
            err = translate(exc, self._path)
            if err is not exc:
                err.__cause__ = exc
            self._open_error = err
            if self._conn is not None:
                self._conn.close()
            self._ready.set()
            return
        self._ready.set()
        conn = self._conn
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    break
                items = [first]
                stop = False
                while len(items) < MAX_ROUND:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    items.append(nxt)
                self._round(conn, items)
                if stop:
                    break
        finally:
            # Fail whatever is still queued, then close.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._post([(item.future, BackendUnavailable("backend closed"), False)])
            conn.close()

    def _round(self, conn: sqlite3.Connection, items: list[_Item]) -> None:
        results: list[tuple[asyncio.Future[Any], Any, bool]] = []
        notify: set[bytes] = set()
        if not any(i.write for i in items):
            now = self._clock.now()
            for item in items:
                results.append(self._call(conn, item, now))
            self._post(results)
            return
        try:
            begin_immediate(conn, self._busy_timeout)
        except Exception as exc:
            err = translate(exc, self._path)
            if err is not exc:
                err.__cause__ = exc
            self._post([(i.future, err, False) for i in items])
            return
        now = self._clock.now()
        # A round of one operation needs no savepoint: a failure rolls the transaction back.
        single = len(items) == 1
        try:
            for item in items:
                if single:
                    res = self._call(conn, item, now)
                    if not res[2]:  # all or nothing: none of its writes may commit
                        conn.execute("ROLLBACK")
                        self._post([res])
                        return
                else:
                    conn.execute("SAVEPOINT op")
                    res = self._call(conn, item, now)
                    if res[2]:
                        conn.execute("RELEASE op")
                    else:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                if res[2] and item.notify:
                    notify.add(item.notify)
                results.append(res)
            conn.execute("COMMIT")
        except Exception as exc:
            err = translate(exc, self._path)
            if err is not exc:
                err.__cause__ = exc
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed on %s", self._path)
            self._post([(i.future, err, False) for i in items])
            return
        self._post(results)
        if notify and self._on_commit is not None:
            for kind in notify:
                try:
                    self._on_commit(kind)
                except Exception:
                    log.exception("wake-up notification failed")

    def _call(
        self, conn: sqlite3.Connection, item: _Item, now: float
    ) -> tuple[asyncio.Future[Any], Any, bool]:
        try:
            return (item.future, item.fn(conn, now), True)
        except Exception as exc:
            err = translate(exc, self._path)
            if err is not exc:
                err.__cause__ = exc
            if isinstance(err, BackendLocked | BackendCorrupt) and isinstance(
                exc, sqlite3.OperationalError
            ):
                raise exc from None  # a file-level problem: fail the whole round
            return (item.future, err, False)

    @staticmethod
    def _post(results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]] = {}
        for res in results:
            by_loop.setdefault(res[0].get_loop(), []).append(res)
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass
