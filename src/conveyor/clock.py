"""The clock conveyor reads. Backends own the authoritative clock; tests inject a fake one."""

from __future__ import annotations

import ctypes
import platform
import sys
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """Wall-clock time of this process (for SQLite: the writer's clock)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


# clock_gettime's system call number, per architecture (Linux)
_CLOCK_GETTIME = {"x86_64": 228, "aarch64": 113, "riscv64": 113}


class HostClock:
    """The host's real-time clock (``CLOCK_REALTIME``), read by the ``clock_gettime`` system
    call itself rather than through libc or Python's ``time`` module.

    Every process that shares a SQLite file runs on one host, and a host has one real-time
    clock: it is the authoritative clock of a SQLite backend. A process can still be made to
    see another time, in the layers above the kernel (libfaketime's ``LD_PRELOAD``, a patched
    ``time.time``); deciding leases and due times on that time, it would recover other
    workers' live leases and run delayed jobs early. The system call skips those layers. Where
    its number is unknown (not Linux on x86-64, arm64 or riscv64) this is ``time.time()``.
    A read costs ~1.5 us (ctypes), once per database round.
    """

    __slots__ = ("_call",)

    def __init__(self) -> None:
        self._call: Callable[[], float] | None = None
        nr = _CLOCK_GETTIME.get(platform.machine()) if sys.platform == "linux" else None
        if nr is None:
            return
        try:
            fn = ctypes.CDLL(None, use_errno=True).syscall
        except (OSError, AttributeError):
            return
        fn.restype = ctypes.c_long
        fn.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.POINTER(_Timespec))

        def read() -> float:
            ts = _Timespec()
            if fn(nr, 0, ctypes.byref(ts)) != 0:  # 0 = CLOCK_REALTIME
                return time.time()
            return ts.sec + ts.nsec / 1e9

        self._call = read

    def now(self) -> float:
        return self._call() if self._call is not None else time.time()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
