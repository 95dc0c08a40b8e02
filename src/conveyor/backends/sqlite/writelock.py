"""Taking SQLite's write lock (``BEGIN IMMEDIATE``) without being starved by other processes.

SQLite's own busy handler (``busy_timeout``) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and
then 100 ms between tries. A writer that found the lock taken therefore soon tries only ten
times a second, and each try succeeds only if it lands in a gap between two transactions of the
other processes. Workers write back to back (a claim-and-acknowledge round every few
milliseconds each), so those gaps are short and a waiting writer lost most tries: in the chaos
run (3 workers, jobs of 0-5 ms, transactions of about a millisecond) a worker waited up to
0.35 s for the lock with two CPU burners beside it and 1.3-2.7 s when slowed down (strace),
while its lease renewal and acknowledgements waited behind that round. Its 1 s leases expired,
another worker recovered and ran its jobs again, although the worker was alive and had finished
them (the CI run's 8 "unexplained duplicate executions").

`begin_immediate` polls instead, every 0.2-2 ms (random, so that two waiting writers do not try
in step): a try costs microseconds, and a waiting writer gets the lock within a few milliseconds
of a gap. The wait is still bounded by the URL's ``busy_timeout``; past it the last "database is
locked" error is raised, as before (the executor reports it as `BackendLocked`). SQLite's busy
handler stays on for everything else (reads during a WAL recovery, opening, migrations): the
connection's busy timeout is set to 0 only while the lock is being taken.
"""

from __future__ import annotations

import random
import sqlite3
import time

POLL = (0.0002, 0.002)
"""Seconds between two tries for the write lock: uniformly random in this range."""


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" / "busy" error."""
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def begin_immediate(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """``BEGIN IMMEDIATE`` on ``conn``, waiting up to ``busy_timeout`` seconds for the lock
    (see the module docstring). Raises the last "database is locked" error past it."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline: float | None = None
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_locked(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + busy_timeout
                if now >= deadline:
                    raise
            time.sleep(random.uniform(*POLL))
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
