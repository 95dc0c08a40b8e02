"""Backends the bench can run on. Everything backend-specific is here: how run.py makes a fresh
store for one workload (and which URL names it), and how the driver counts jobs in it cheaply.

The workloads themselves only see a URL (``BENCH_URL``) and a `Monitor`; adding a backend is
one `Target` subclass plus an entry in `TARGETS`.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
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

    def env(self) -> dict[str, str]:
        """Extra environment for the driver (e.g. the server's pid, for its CPU)."""
        return {}

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


# -- Redis ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_pings(port: int) -> bool:
    """A redis-server on loopback ``port`` answers PING (a raw socket: no client needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_prefix(url: str) -> str:
    from conveyor.backends.redis import parse_redis_url

    return parse_redis_url(url)[2]


def redis_client(url: str):
    """A plain sync redis-py client (hiredis parser when installed) for the bench's own reads."""
    import redis

    from conveyor.backends.redis import parse_redis_url

    return redis.Redis.from_url(parse_redis_url(url)[0], decode_responses=True)


# conveyor's per-queue state sets (backends/redis/reads.py ZSETS): state -> key suffix; ZCARD
# of each is O(1).
REDIS_ZSETS = {"queued": "ready", "scheduled": "sched", "active": "active",
               "completed": "f:completed", "failed": "f:failed", "cancelled": "f:cancelled"}  # fmt: skip


class RedisMonitor(Monitor):
    """``ZCARD <prefix>:{default}:f:completed`` on a separate connection: the backend keeps one
    sorted set per state, so "how many completed" is one O(1) command."""

    def __init__(self, url: str) -> None:
        self.r = redis_client(url)
        p = redis_prefix(url)
        self.keys = {s: f"{p}:{{{QUEUE}}}:{z}" for s, z in REDIS_ZSETS.items()}
        self._done = self.keys["completed"]

    def completed(self) -> int:
        return int(self.r.zcard(self._done))

    def counts(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for s, k in self.keys.items():
            # `active` keeps one member that is no job (score +inf): count finite scores
            pipe.zcount(k, "-inf", "(+inf") if s == "active" else pipe.zcard(k)
        return {s: int(n) for s, n in zip(self.keys, pipe.execute(), strict=True) if n}

    def close(self) -> None:
        self.r.close()


class RedisTarget(Target):
    """Its own ``redis-server`` (free loopback port, temp dir, ``--save "" --appendonly no``, as
    the peers' harnesses run it; never the machine's 6379), started on first use and killed by
    `close()`. Every workload gets ``FLUSHALL`` and the same URL, ``redis://127.0.0.1:PORT/0``."""

    name = "redis"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.dir: Path | None = None
        self.version = ""

    def describe(self) -> str:
        return f"redis-server {self.version}" if self.version else ""

    def env(self) -> dict[str, str]:
        return {"BENCH_REDIS_PID": str(self.proc.pid)} if self.proc else {}

    def _start(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise NotImplementedYet("redis-server is not on PATH")
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        self.version = next((w[2:] for w in out.split() if w.startswith("v=")), "")
        self.dir = tmp / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between probing and binding: retry
            self.port = free_port()
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
                 "--logfile", str(self.dir / "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if redis_pings(self.port):
                    return
                time.sleep(0.02)
            self.close()
        raise RuntimeError(f"redis-server did not start (log: {self.dir / 'redis.log'})")

    def fresh(self, tmp: Path, label: str) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self._start(tmp)
        url = f"redis://127.0.0.1:{self.port}/0"
        r = redis_client(url)
        try:
            r.flushall()  # keys only: the script cache stays, as on a long-running server
        finally:
            r.close()
        return url

    def drop(self, url: str) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        r = redis_client(url)
        try:
            r.flushall()  # free a big backlog's memory now, not at the next fresh()
        except Exception:
            pass
        finally:
            r.close()

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


TARGETS: dict[str, type[Target]] = {"sqlite": SqliteTarget, "redis": RedisTarget}


def scheme(url: str) -> str:
    return url.split(":", 1)[0]


def monitor_for(url: str) -> Monitor:
    if scheme(url) == "sqlite":
        return SqliteMonitor(url)
    if scheme(url) == "redis":
        return RedisMonitor(url)
    raise NotImplementedYet(f"no monitor for {scheme(url)!r} URLs yet")


def after_enqueue(url: str) -> None:
    if scheme(url) == "sqlite":
        sqlite_after_enqueue(url)


def store_size(url: str) -> dict[str, Any]:
    """What the store holds now: ``store_bytes`` = bytes on disk of the SQLite file (+WAL), or
    redis-server's ``used_memory`` (INFO memory; includes the server's own baseline of ~1 MB, so
    take differences); ``db_bytes`` / ``redis_used_memory`` name the same figure."""
    if scheme(url) == "sqlite":
        p = Path(sqlite_path(url))
        n = sum(f.stat().st_size for f in p.parent.iterdir() if f.name.startswith(p.name))
        return {"store_bytes": n, "db_bytes": n}
    if scheme(url) == "redis":
        r = redis_client(url)
        try:
            mem = r.info("memory")
            keys = r.dbsize()
        finally:
            r.close()
        return {"store_bytes": mem["used_memory"], "redis_used_memory": mem["used_memory"],
                "redis_keys": keys}  # fmt: skip
    return {}


def command_stats(url: str) -> dict[str, tuple[int, int]]:
    """Redis INFO commandstats: command -> (calls, usec). Commands that scripts run are counted
    too (inside their EVALSHA's time). {} for other backends."""
    if scheme(url) != "redis":
        return {}
    r = redis_client(url)
    try:
        info = r.info("commandstats")
    finally:
        r.close()
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in info.items()}


def command_stats_diff(a: dict, b: dict, jobs: int) -> dict[str, dict]:
    """Per command between two `command_stats`: calls and usec per job, biggest first."""
    out = {}
    for k, (calls, usec) in b.items():
        c0, u0 = a.get(k, (0, 0))
        if calls - c0 > 0:
            out[k] = {"calls_per_job": round((calls - c0) / jobs, 3),
                      "usec_per_job": round((usec - u0) / jobs, 2)}  # fmt: skip
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["usec_per_job"]))
