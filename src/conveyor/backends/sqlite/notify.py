"""Cross-process wake-ups for SQLite: datagram sockets registered beside the database file.

Each listening worker binds a Unix datagram socket (Linux: in the abstract namespace, so no file
path length limit and nothing to clean up when it dies) and drops a marker file named after it in
``<db>.wake/``. After a commit that makes work ready, a process sends one byte to every marker's
socket: ``w`` (work may be ready) or ``c`` (a job was cancelled). A marker whose socket refuses
the datagram belongs to a dead worker and is removed. Delivery is best effort; workers also
re-check the database on a slow timer, so a lost datagram costs latency, never a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import socket
import sys
from collections.abc import Callable

ABSTRACT = sys.platform.startswith("linux")


def wake_dir(db_path: str) -> str:
    return db_path + ".wake"


class Notifier:
    """Sends wake-up datagrams to every registered listener of one database file."""

    def __init__(self, db_path: str) -> None:
        self._dir = wake_dir(db_path)
        self._prefix = (
            "conveyor-" + hashlib.sha1(os.path.abspath(db_path).encode()).hexdigest()[:16]
        )
        self._sock: socket.socket | None = None
        self._mtime = -1
        self._targets: list[tuple[str, str | bytes]] = []

    def _refresh(self) -> None:
        try:
            mtime = os.stat(self._dir).st_mtime_ns
        except FileNotFoundError:
            self._targets = []
            self._mtime = -1
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        targets: list[tuple[str, str | bytes]] = []
        for name in os.listdir(self._dir):
            if not name.endswith(".w"):
                continue
            token = name[:-2]
            if ABSTRACT:
                targets.append((name, f"\0{self._prefix}-{token}".encode()))
            else:
                targets.append((name, os.path.join(self._dir, token + ".sock")))
        self._targets = targets

    def notify(self, kind: bytes) -> None:
        """Send ``kind`` to every listener; never blocks, never raises for a dead listener."""
        self._refresh()
        if not self._targets:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        for marker, addr in self._targets:
            try:
                self._sock.sendto(kind, addr)
            except BlockingIOError:
                pass  # its buffer is full: it has wake-ups pending anyway
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self._dir, marker))
                        if not ABSTRACT:
                            os.unlink(os.path.join(self._dir, marker[:-2] + ".sock"))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SocketListener:
    """One worker's wake-up socket, read on the event loop via ``add_reader``."""

    def __init__(self, db_path: str, token: str, callback: Callable[[str], None]) -> None:
        self._dir = wake_dir(db_path)
        self._token = token
        self._callback = callback
        self._marker = os.path.join(self._dir, token + ".w")
        prefix = "conveyor-" + hashlib.sha1(os.path.abspath(db_path).encode()).hexdigest()[:16]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._path: str | None = None
        os.makedirs(self._dir, exist_ok=True)
        if ABSTRACT:
            self._sock.bind(f"\0{prefix}-{token}".encode())
        else:
            self._path = os.path.join(self._dir, token + ".sock")
            self._sock.bind(self._path)
        with open(self._marker, "w"):
            pass
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        kinds = set()
        while True:
            try:
                kinds.add(self._sock.recv(16))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        if b"c" in kinds:
            self._callback("cancel")
        if kinds - {b"c"}:
            self._callback("work")

    def idle(self, idle: bool) -> None:
        """Datagrams reach every listener anyway: nothing to switch."""

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for path in (self._marker, self._path):
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)
