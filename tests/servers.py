"""Test servers the fixtures own: redis-server (single or a 3-master cluster) on free loopback
ports in temp dirs, started and killed by the tests themselves."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
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


def free_port(*, cluster_bus: bool = False) -> int:
    """A free loopback port; with ``cluster_bus``, one whose +10000 bus port is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not cluster_bus or (port + 10000 <= 65535 and _is_free(port + 10000)):
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
