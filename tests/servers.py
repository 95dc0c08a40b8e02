"""Test servers the fixtures own: redis-server (single or a 3-master cluster) on free loopback
ports in temp dirs, started and killed by the tests themselves."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import eventually_sync

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    """Path of ``name``; skip locally when missing, fail under CI=true (a skipped backend suite
    would hide a broken backend)."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found on PATH"
        if IN_CI:
            pytest.fail(f"{msg} (CI=true: backend suites must run, not skip)")
        pytest.skip(msg)
    return path


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_GIVEN: set[int] = set()


def free_port(*, cluster_bus: bool = False) -> int:
    """A free loopback port, never one this process was given before (the kernel hands a port
    just released out again: two servers asked for ports before either bound its own got the
    same one); with ``cluster_bus``, one whose +10000 bus port is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in _GIVEN:
            continue
        if not cluster_bus or (port + 10000 <= 65535 and _is_free(port + 10000)):
            _GIVEN.update((port, port + 10000) if cluster_bus else (port,))
            return port


def _die_with_parent() -> None:
    """Linux: the server gets SIGKILL when the test process dies, even by kill -9 or a timeout."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process. ``restart()`` keeps its port and data dir (AOF survives)."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, extra: list[str] | None = None):
        self.binary = require_binary("redis-server")
        self.port = free_port(cluster_bus="--cluster-enabled" in (extra or []))
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "redis.log"), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        eventually_sync(lambda: _pings(self.port), 10, what=f"redis-server on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A 3-master Redis Cluster on loopback (no replicas), built with redis-cli --cluster."""

    def __init__(self, workdir: Path, masters: int = 3):
        require_binary("redis-server")
        cli = require_binary("redis-cli")
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(workdir / f"node{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            for i in range(masters)
        ]
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip

        def ok() -> bool:
            # Every node, not the first only: a node that has not yet learnt the slot layout
            # answers CLUSTERDOWN to the first command a test sends it.
            for n in self.nodes:
                out = subprocess.run(
                    [cli, "-p", str(n.port), "cluster", "info"],
                    capture_output=True, text=True, timeout=5,
                )  # fmt: skip
                if "cluster_state:ok" not in out.stdout:
                    return False
            return True

        eventually_sync(ok, 20, what="cluster_state:ok")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def pg_binary(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else the newest ``/usr/lib/postgresql/*/bin/``
    (Debian keeps them there); skip locally when missing, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                       key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)  # fmt: skip
        if found:
            return str(found[-1])
        return require_binary(name)
    return path


def _as_postgres() -> list[str]:
    """initdb refuses to run as root: run the server binaries as the OS user postgres."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _postgres_child() -> None:
    """The server process runs as the OS user postgres (when we are root: PostgreSQL refuses
    root), and gets SIGKILL when the test process dies. Dropping privileges here rather than
    through runuser keeps the postmaster our direct child: a death signal set before a change of
    user would be cleared, and signals sent to runuser would not reach it."""
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    _die_with_parent()


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``initdb`` into a temp dir, started on a free loopback
    port with its socket in that dir, stopped (``-m immediate``) at the end; the server dies
    with the test process too. ``restart()`` keeps port and data.

    Test settings: ``fsync=off`` and ``full_page_writes=off``: they only matter if the machine
    itself crashes. A server whose processes are killed with -9 loses nothing committed: a
    commit returns after its WAL was written to the OS (not synced), and the OS keeps it.
    ``synchronous_commit`` stays on: with it off a commit returns while its WAL may still be in
    the server's shared memory, which a kill -9 of the server loses (the chaos run's restart
    scenario lost an acknowledged job that way).
    """

    def __init__(self, workdir: Path, *, fast: bool = True) -> None:
        self.initdb = pg_binary("initdb")
        self.postgres = str(Path(self.initdb).with_name("postgres"))
        # The server runs as the OS user postgres, which cannot enter pytest's private temp
        # dirs (mode 0700): the cluster gets a dir of its own in the system temp dir, removed
        # by stop(). ``workdir`` keeps nothing but says which test made it.
        self.dir = Path(tempfile.mkdtemp(prefix=f"conveyor-pg-{workdir.name}-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.fast = fast
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        done = subprocess.run(
            [*_as_postgres(), self.initdb, "-D", str(self.data), "-A", "trust", "-E", "UTF8",
             "--locale=C", "-U", "postgres"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        args = [self.postgres, "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                "-c", "max_connections=300", "-c", "shared_buffers=128MB"]  # fmt: skip
        if self.fast:
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "postgres.log", "ab"),  # noqa: SIM115
            preexec_fn=_postgres_child,
        )
        eventually_sync(self._accepts, 30, what=f"postgres on port {self.port}")

    def _accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited: {(self.dir / 'postgres.log').read_text()[-2000:]}"
                ) from None
            return False

    def stop(self, sig: int = signal.SIGQUIT) -> None:
        """SIGQUIT to the postmaster: the server's immediate shutdown (what ``pg_ctl stop -m
        immediate`` sends); SIGKILL to simulate a crash: every server process is killed (the
        backends too, as in a crash of the server; a new postmaster refuses to start while
        backends of the old one still hold its shared memory)."""
        if sig == signal.SIGKILL and self.proc is not None and self.proc.poll() is None:
            import psutil

            # The postmaster is frozen first: killed children are what it reacts to, by forking
            # new ones (a crash restart) that would outlive it and hold its shared memory.
            self.proc.send_signal(signal.SIGSTOP)
            children = psutil.Process(self.proc.pid).children(recursive=True)
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:  # it ended meanwhile
                    pass
            self.proc.kill()
            psutil.wait_procs(children, timeout=30)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
