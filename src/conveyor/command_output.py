"""What a command job gives back: its output tails, progress lines, and the outcome (result or
failure) of an attempt from the supervisor's status. Used by `command.run_command`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from typing import TYPE_CHECKING, Any

import orjson

from .errors import Permanent

if TYPE_CHECKING:
    from .command_spec import CommandSpec
    from .worker.context import Context

MESSAGE_LIMIT = 1000
READ_CHUNK = 65536
PROGRESS_LINE_LIMIT = 4096  # longer lines are never progress lines: not buffered for parsing
_PROGRESS = re.compile(rb"^PROGRESS:\s*(\S+?)%?(?:\s+(.*))?$")


class CommandFailed(Exception):
    """The command exited non-zero or was killed by a signal (retried as configured)."""

    def __init__(self, message: str, fields: dict[str, Any]) -> None:
        super().__init__(message)
        self.fields = fields

    def error_fields(self) -> dict[str, Any]:
        return self.fields


class CommandNotStarted(Permanent):
    """The command could not be started (missing program, permission): fails without retries."""

    def __init__(self, message: str, fields: dict[str, Any]) -> None:
        super().__init__(message)
        self.fields = fields

    def error_fields(self) -> dict[str, Any]:
        return self.fields


class Tail:
    """The last ``limit`` bytes of a stream, read as it arrives."""

    __slots__ = ("buf", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.buf += chunk
        over = len(self.buf) - self.limit
        if over > 0:
            del self.buf[:over]
            self.dropped += over

    def text(self, limit: int | None = None) -> str:
        data = self.buf if limit is None else self.buf[-limit:]
        return bytes(data).decode("utf-8", errors="replace")


def parse_progress(line: bytes) -> tuple[float, str | None] | None:
    """``PROGRESS: 40 message`` -> (40.0, "message"); None for anything malformed."""
    m = _PROGRESS.match(line.strip())
    if m is None:
        return None
    try:
        percent = float(m.group(1))
    except ValueError:
        return None
    if not 0 <= percent <= 100 or percent != percent:
        return None
    msg = m.group(2).decode("utf-8", errors="replace").strip() if m.group(2) else None
    return percent, (msg[:MESSAGE_LIMIT] if msg else None)


class ProgressFeed:
    """Coalesces progress lines: at most one backend write in flight, the latest value wins."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pending: tuple[float, str | None] | None = None
        self.task: asyncio.Task[None] | None = None

    def offer(self, value: tuple[float, str | None]) -> None:
        self.pending = value
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self.pending is not None:
            percent, message = self.pending
            self.pending = None
            with contextlib.suppress(Exception):  # progress is best effort; the job goes on
                await self.ctx.progress(percent, message)  # type: ignore[misc]

    async def flush(self) -> None:
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task


async def read_stdout(stream: asyncio.StreamReader, tail: Tail, progress: ProgressFeed) -> None:
    partial = bytearray()
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            if partial.startswith(b"PROGRESS:"):  # a last line without its newline
                value = parse_progress(bytes(partial))
                if value is not None:
                    progress.offer(value)
            break
        tail.add(chunk)
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                if len(partial) + len(chunk) - start <= PROGRESS_LINE_LIMIT:
                    partial += chunk[start:]
                else:
                    partial = bytearray(b"\x00")  # too long to be a progress line: skip it
                break
            line = bytes(partial) + chunk[start:nl] if partial else chunk[start:nl]
            partial = bytearray()
            start = nl + 1
            if line.startswith(b"PROGRESS:"):
                value = parse_progress(line)
                if value is not None:
                    progress.offer(value)


async def read_all(stream: asyncio.StreamReader, tail: Tail) -> None:
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            break
        tail.add(chunk)


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def outcome(
    spec: CommandSpec, argv: list[str], status: dict[str, Any], out: Tail, err: Tail
) -> Any:
    stderr_tail = err.text(MESSAGE_LIMIT).strip()
    program = argv[2].split()[0] if spec.shell and argv[2].split() else argv[0]
    if "exec_error" in status:
        fields = {"program": program, "errno": status.get("errno")}
        raise CommandNotStarted(f"cannot run {program!r}: {status['exec_error']}", fields)
    if not status:
        raise CommandFailed("the command's supervisor died (killed from outside?)", {})
    if "signal" in status:
        n = int(status["signal"])
        msg = f"killed by {_signal_name(n)}"
        raise CommandFailed(_message(msg, stderr_tail), {"signal": n, "stderr": stderr_tail})
    code = int(status.get("exit", -1))
    if code != 0:
        raise CommandFailed(
            _message(f"exit code {code}", stderr_tail), {"exit_code": code, "stderr": stderr_tail}
        )
    last = _last_line(out)
    if last is not None:
        try:
            return orjson.loads(last)
        except orjson.JSONDecodeError:
            pass
    return {"exit_code": 0, "stdout": out.text(), "stderr": err.text()}


def _message(head: str, stderr_tail: str) -> str:
    """``exit code 3: <the end of stderr>``, at most MESSAGE_LIMIT characters (the tail kept)."""
    if not stderr_tail:
        return head
    room = MESSAGE_LIMIT - len(head) - 2
    tail = stderr_tail if len(stderr_tail) <= room else "…" + stderr_tail[-(room - 1) :]
    return f"{head}: {tail}"


def _last_line(tail: Tail) -> bytes | None:
    for line in reversed(bytes(tail.buf).splitlines()):
        if line.strip():
            return line.strip()
    return None
