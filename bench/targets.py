"""Backends the bench can run on. Everything backend-specific is here: how run.py makes a fresh
store for one workload (and which URL names it), and how the driver counts jobs in it cheaply.

The workloads themselves only see a URL (``BENCH_URL``) and a `Monitor`; adding a backend is
one `Target` subclass plus an entry in `TARGETS`.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from .common import QUEUE


class NotImplementedYet(Exception):
    """The bench knows the backend's name but cannot run it yet."""


class Monitor:
    """Reads the system's own counters, called every 2-5 ms: must be O(1)."""

    def completed(self) -> int:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Target:
    """One backend: make a fresh store per workload, monitor it, tidy up."""

    name = ""

    def describe(self) -> str:
        """Version text for the `machine` field (e.g. 'SQLite 3.40.1')."""
        return ""

    def fresh(self, tmp: Path, label: str) -> str:
        """Create an empty store for one workload; return its URL."""
        raise NotImplementedError

    def drop(self, url: str) -> None:
        pass

    def close(self) -> None:
        pass


# -- SQLite --------------------------------------------------------------------------------------


def sqlite_path(url: str) -> str:
    from conveyor.backends.sqlite.backend import parse_sqlite_url

    return parse_sqlite_url(url)[0]


class SqliteMonitor(Monitor):
    """A direct read-only connection on the ``counts`` table (kept by every transition in the
    same transaction, so one primary-key lookup answers "how many completed")."""

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self.conn = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._sql = "SELECT n FROM counts WHERE queue = ? AND status = 'completed'"

    def completed(self) -> int:
        row = self.conn.execute(self._sql, (QUEUE,)).fetchone()
        return row[0] if row else 0

    def counts(self) -> dict[str, int]:
        return dict(
            self.conn.execute("SELECT status, n FROM counts WHERE queue = ?", (QUEUE,)).fetchall()
        )

    def close(self) -> None:
        self.conn.close()


def sqlite_after_enqueue(url: str) -> None:
    """Untimed: fold the pre-enqueue's WAL into the main file, as the SQL peers do."""
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


class SqliteTarget(Target):
    name = "sqlite"

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def fresh(self, tmp: Path, label: str) -> str:
        d = tmp / "db" / label
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return f"sqlite:///{d / 'conveyor.db'}"  # absolute path: sqlite:////tmp/...

    def drop(self, url: str) -> None:
        shutil.rmtree(Path(sqlite_path(url)).parent, ignore_errors=True)


# -- Redis (a later issue) -------------------------------------------------------------------------


class RedisTarget(Target):
    """Placeholder: the Redis backend lands in a later issue. It will start its own
    ``redis-server`` on a free loopback port (never the machine's 6379), hand out
    ``redis://127.0.0.1:PORT/<db>`` URLs, FLUSHDB between workloads, and count from the
    backend's own per-queue counters."""

    name = "redis"

    def fresh(self, tmp: Path, label: str) -> str:
        raise NotImplementedYet(
            "bench/targets.py RedisTarget is a placeholder; a later issue adds it"
        )


TARGETS: dict[str, type[Target]] = {"sqlite": SqliteTarget, "redis": RedisTarget}


def scheme(url: str) -> str:
    return url.split(":", 1)[0]


def monitor_for(url: str) -> Monitor:
    if scheme(url) == "sqlite":
        return SqliteMonitor(url)
    raise NotImplementedYet(f"no monitor for {scheme(url)!r} URLs yet")


def after_enqueue(url: str) -> None:
    if scheme(url) == "sqlite":
        sqlite_after_enqueue(url)


def store_size(url: str) -> dict[str, Any]:
    """Bytes on disk of the store (for 'backend memory per queued job')."""
    if scheme(url) == "sqlite":
        p = Path(sqlite_path(url))
        return {
            "db_bytes": sum(
                f.stat().st_size for f in p.parent.iterdir() if f.name.startswith(p.name)
            )
        }
    return {}
