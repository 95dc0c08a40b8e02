"""A writer is not starved of SQLite's write lock by another process writing back to back
(`backends/sqlite/writelock.py`): it takes the lock within milliseconds of a gap, where SQLite's
busy handler, polling every 100 ms, missed the gaps for seconds (and a worker's lease renewals
and acknowledgements waited behind it past their leases)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor

# Another process's transactions: the write lock held HOLD seconds, free for GAP, again and again.
HOLD, GAP = 0.020, 0.001
BOUND = 0.5  # seconds one write may wait: 25 of those cycles
HOLDER = f"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
deadline = time.monotonic() + 60
first = True
while time.monotonic() < deadline:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE conveyor_meta SET value = value WHERE key = 'schema'")
    if first:
        print("holding", flush=True)
        first = False
    time.sleep({HOLD})
    conn.execute("COMMIT")
    time.sleep({GAP})
"""


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """The lock-holding process, started by the test once the file exists; killed at
    teardown."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


async def test_a_write_gets_the_lock_between_another_process_back_to_back_transactions(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    db = tmp_path / "q.db"
    # Given a store, and another process holding its write lock 20 ms at a time, 1 ms gaps
    app = Conveyor(f"sqlite:///{db}")
    app.declare("t", queue="q")
    await app.open()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
        )
        holder.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        # When this process writes 20 times
        waits = []
        for _ in range(20):
            started = time.monotonic()
            await app.enqueue("t", {})
            waits.append(time.monotonic() - started)
        # Then every write got the lock within BOUND (a busy handler sleeping 100 ms between
        # tries lands in a 1 ms gap one try in 21: seconds)
        assert proc.poll() is None, "the other process stopped holding the lock"
        slow = [round(w, 3) for w in waits if w > BOUND]
        assert not slow, f"writes waited {slow} s for the lock (bound {BOUND} s)"
    finally:
        await app.close()
