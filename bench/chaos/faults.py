"""Processes the harness runs and the faults it injects into them, each logged to
``faults-<pid>.jsonl`` in the run's directory (see `records`).

- `Pool`: worker processes (``conveyor worker --app bench.chaos.app:app``, each in its own
  session), killed with SIGKILL (`kill`), stopped with SIGTERM (`stop`, timing the exit), and
  replaced; `reap` logs a worker that died by a signal nobody sent it (the poison job) as a kill
  at the moment it was seen.
- `RedisServer`: a redis-server with AOF (``appendfsync everysec``) that `restart` kills -9 and
  starts again on the same port and data dir (the test suite passes its own fixture's server,
  which has the same ``start`` / ``stop(sig)`` interface).
- `faketime_prefix`: the command prefix that runs a process with its clock moved by libfaketime.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..targets import free_port, redis_pings
from .records import RecordFile

ROOT = Path(__file__).resolve().parents[2]


def child_env(url: str, directory: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "CHAOS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env | {"CONVEYOR_URL": url, "CHAOS_DIR": str(directory)} | extra


class FaultLog:
    def __init__(self, directory: Path) -> None:
        self._out = RecordFile(directory / f"faults-{os.getpid()}.jsonl")

    def kill(self, pid: int, t: float) -> None:
        self._out.write({"k": "kill", "pid": pid, "t": t})

    def stop(self, pid: int, t: float, exit_s: float | None) -> None:
        self._out.write({"k": "stop", "pid": pid, "t": t, "exit": exit_s})

    def restart(self, t0: float, t1: float) -> None:
        self._out.write({"k": "restart", "t0": t0, "t1": t1})


class Proc:
    """One child process in its own session, output to ``log``."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                list(argv), cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid = self.popen.pid
        self.logged = False  # its death is in the fault log
        self.concurrency: int | None = None  # a worker's, when not the pool's

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> float:
        """SIGKILL its group and reap it; returns the time of the kill."""
        t = time.time()
        self.signal(signal.SIGKILL)
        self.popen.wait()
        return t

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Pool:
    """Worker processes of one run."""

    def __init__(
        self,
        url: str,
        directory: Path,
        faults: FaultLog,
        *,
        concurrency: int = 25,
        grace: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.dir = directory
        (directory / "logs").mkdir(exist_ok=True)
        self.faults = faults
        self.concurrency = concurrency
        self.grace = grace
        self.env = env or {}
        self.procs: list[Proc] = []
        self.all: list[Proc] = []

    def start(
        self, *, prefix: Sequence[str] = (), concurrency: int | None = None, **env: str
    ) -> Proc:
        argv = [
            *prefix, sys.executable, "-m", "conveyor", "--url", self.url,
            "--app", "bench.chaos.app:app", "worker", "-c", str(concurrency or self.concurrency),
            "--shutdown-grace", str(self.grace),
        ]  # fmt: skip
        log = self.dir / "logs" / f"worker-{len(self.all)}.log"
        p = Proc(argv, child_env(self.url, self.dir, **(self.env | env)), log)
        p.concurrency = concurrency
        self.procs.append(p)
        self.all.append(p)
        return p

    def kill(self, p: Proc) -> None:
        t = p.kill()
        p.logged = True
        self.faults.kill(p.pid, t)
        self.procs.remove(p)

    def stop(self, p: Proc, timeout: float = 60.0) -> float:
        """SIGTERM, wait for the exit; returns the seconds it took (logged as a stop fault)."""
        t = time.time()
        p.signal(signal.SIGTERM)
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
        took = time.time() - t
        p.logged = True
        self.faults.stop(p.pid, t, took)
        if p in self.procs:
            self.procs.remove(p)
        return took

    def reap(self) -> list[Proc]:
        """Workers that died on their own (logged as kills at the time seen); removed."""
        dead = [p for p in self.procs if not p.alive()]
        for p in dead:
            self.procs.remove(p)
            if not p.logged:
                p.logged = True
                self.faults.kill(p.pid, time.time())
        return dead

    def close(self) -> None:
        for p in list(self.procs):
            self.stop(p, timeout=self.grace + 10)

    def errors(self) -> list[str]:
        """ERROR/CRITICAL lines and tracebacks in the workers' output."""
        out = []
        for p in self.all:
            for line in p.output().splitlines():
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                    out.append(f"worker {p.pid}: {line[:300]}")
        return out


class Server(Protocol):
    url: str

    def start(self) -> None: ...

    def stop(self, sig: int = signal.SIGTERM) -> None: ...


class RedisServer:
    """A redis-server with AOF (``appendfsync`` everysec by default) on a free loopback port,
    data in ``directory``."""

    def __init__(self, directory: Path, appendfsync: str = "everysec") -> None:
        self.appendfsync = appendfsync
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync,
             "--maxmemory-policy", "noeviction", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not redis_pings(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None


def restart(server: Server, faults: FaultLog) -> float:
    """Kill -9 the server and start it again (AOF replayed); returns the downtime."""
    t0 = time.time()
    server.stop(signal.SIGKILL)
    server.start()
    t1 = time.time()
    faults.restart(t0, t1)
    return t1 - t0


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime_prefix(skew: float) -> list[str]:
    """``env LD_PRELOAD=libfaketime FAKETIME=+300s`` (libfaketime: Debian's ``faketime``)."""
    lib = FAKETIME_LIB
    if not os.path.exists(lib):
        found = shutil.which("faketime")
        if found is None:
            raise FileNotFoundError("libfaketime not found: apt-get install faketime")
        lib = next(Path("/usr/lib").rglob("libfaketime.so.1"), Path(lib)).as_posix()
    return ["env", f"LD_PRELOAD={lib}", f"FAKETIME={skew:+.0f}s"]
