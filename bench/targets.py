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


# -- PostgreSQL ----------------------------------------------------------------------------------


class PostgresMonitor(Monitor):
    """A direct connection reading ``counts`` plus the deltas not folded yet (the transitions
    append deltas; workers fold them every maintenance pass, so the deltas stay short)."""

    def __init__(self, url: str) -> None:
        import psycopg

        from conveyor.backends.postgres.url import parse_postgres_url

        opts = parse_postgres_url(url)
        self.conn = psycopg.connect(opts.conninfo, autocommit=True)
        s = opts.schema
        self._sql = (
            f"SELECT status, sum(n) FROM (SELECT status, n FROM {s}.counts WHERE queue = %(q)s "
            f"UNION ALL SELECT status, n FROM {s}.count_deltas WHERE queue = %(q)s) c "
            "GROUP BY status"
        )

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.conn.execute(self._sql, {"q": QUEUE}).fetchall()}

    def completed(self) -> int:
        return self.counts().get("completed", 0)

    def close(self) -> None:
        self.conn.close()


class PostgresTarget(Target):
    """Its own cluster, as the SQL peers' harness (``../shared/peers/sql/run.py``) runs it:
    ``initdb`` into a temp dir, ``pg_ctl start`` on a free loopback port with only the settings
    that locate the server (everything else the PostgreSQL default: fsync on,
    synchronous_commit on). As root the binaries run as the OS user postgres. Each workload gets
    a fresh PostgreSQL schema (``?schema=``), dropped after it."""

    name = "postgres"

    def __init__(self) -> None:
        self.data: Path | None = None
        self.port = 0
        self.prefix: list[str] = []
        self.version = ""
        self.pid = 0

    def describe(self) -> str:
        return f"PostgreSQL {self.version}" if self.version else ""

    def env(self) -> dict[str, str]:
        return {"BENCH_PG_PID": str(self.pid)} if self.pid else {}

    def _bin(self, name: str) -> str:
        exe = shutil.which(name) or next(
            iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
        )
        if exe is None:
            raise NotImplementedYet(f"{name} is not on PATH")
        return str(exe)

    def _run(self, argv: list[str]) -> None:
        r = subprocess.run(self.prefix + argv, capture_output=True, timeout=120, check=False)
        if r.returncode:
            raise RuntimeError(f"{argv[0]} failed: {r.stdout[-800:]!r} {r.stderr[-800:]!r}")

    def _start(self, tmp: Path) -> None:
        import os
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="conveyor-bench-pg-"))
        if os.geteuid() == 0:
            shutil.chown(base, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.data = base / "data"
        self.port = free_port()
        self._run([self._bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "bench",
                   "-E", "UTF8", "--locale=C"])  # fmt: skip
        opts = f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        self._run([self._bin("pg_ctl"), "-D", str(self.data), "-l", str(base / "server.log"),
                   "-w", "-t", "60", "-o", opts, "start"])  # fmt: skip
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        import psycopg

        with psycopg.connect(self._dsn(), autocommit=True) as c:
            self.version = c.execute("SHOW server_version").fetchone()[0]

    def _dsn(self) -> str:
        return f"postgresql://bench@127.0.0.1:{self.port}/postgres"

    def fresh(self, tmp: Path, label: str) -> str:
        if self.data is None:
            self._start(tmp)
        schema = "w_" + "".join(c if c.isalnum() else "_" for c in label.lower())
        self.drop(f"{self._dsn()}?schema={schema}")
        return f"{self._dsn()}?schema={schema}"

    def drop(self, url: str) -> None:
        if self.data is None:
            return
        import psycopg

        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(self._dsn(), autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def close(self) -> None:
        if self.data is None:
            return
        try:
            self._run([self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.data.parent, ignore_errors=True)
            self.data = None


TARGETS: dict[str, type[Target]] = {
    "sqlite": SqliteTarget,
    "redis": RedisTarget,
    "postgres": PostgresTarget,
}


def scheme(url: str) -> str:
    return url.split(":", 1)[0]


def monitor_for(url: str) -> Monitor:
    if scheme(url) == "sqlite":
        return SqliteMonitor(url)
    if scheme(url) == "redis":
        return RedisMonitor(url)
    if scheme(url) in ("postgresql", "postgres"):
        return PostgresMonitor(url)
    raise NotImplementedYet(f"no monitor for {scheme(url)!r} URLs yet")


def after_enqueue(url: str) -> None:
    if scheme(url) == "sqlite":
        sqlite_after_enqueue(url)
    elif scheme(url) in ("postgresql", "postgres"):
        postgres_after_enqueue(url)


def postgres_after_enqueue(url: str) -> None:
    """Untimed: ANALYZE the jobs table after the pre-enqueue, so the planner knows the backlog
    from the first claim (autovacuum's analyze would get there a little later)."""
    import psycopg

    from conveyor.backends.postgres.url import parse_postgres_url

    opts = parse_postgres_url(url)
    with psycopg.connect(opts.conninfo, autocommit=True) as c:
        c.execute(f"ANALYZE {opts.schema}.jobs")


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
    if scheme(url) in ("postgresql", "postgres"):
        return postgres_table_stats(url)
    return {}


def postgres_table_stats(url: str) -> dict[str, Any]:
    """Size of the schema's tables and indexes, and the jobs table's live / dead tuples."""
    import psycopg

    from conveyor.backends.postgres.url import parse_postgres_url

    opts = parse_postgres_url(url)
    with psycopg.connect(opts.conninfo, autocommit=True) as c:
        if c.execute("SELECT to_regclass(%s)", (f"{opts.schema}.jobs",)).fetchone()[0] is None:
            return {"store_bytes": 0}  # not created yet (the app creates it when it opens)
        size = c.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (opts.schema,),
        ).fetchone()[0]
        row = c.execute(
            "SELECT n_live_tup, n_dead_tup, pg_total_relation_size(relid), autovacuum_count "
            "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'jobs'",
            (opts.schema,),
        ).fetchone() or (0, 0, 0, 0)
        rows = c.execute(f"SELECT count(*) FROM {opts.schema}.jobs").fetchone()[0]
    return {"store_bytes": int(size), "pg_jobs_rows": rows, "pg_jobs_live": row[0],
            "pg_jobs_dead": row[1], "pg_jobs_bytes": row[2], "pg_autovacuums": row[3]}  # fmt: skip


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
