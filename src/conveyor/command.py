"""Command jobs: run a program (any language) as a job, with live progress and bounded output.

Registered with ``app.command(name, argv, ...)`` or ``conveyor worker --command name='cmd'``.
For each attempt the worker starts the command through a small supervisor (`supervise.py`) in
its own process group and:

- writes the payload as JSON to its stdin (``stdin=True``, the default) and/or substitutes
  ``{field}`` placeholders in the arguments (shell-quoted when ``shell=True``);
- reads stdout and stderr as they arrive, keeping only the last ``output_limit`` bytes of each
  (default 1 MB), so a chatty program cannot grow the worker's memory;
- turns ``PROGRESS: <0-100> [message]`` lines on stdout into job progress (malformed ones are
  ignored);
- on exit 0, takes the last non-empty stdout line as the result when it is JSON; otherwise the
  result is ``{"exit_code": 0, "stdout": <tail>, "stderr": <tail>}``;
- on a non-zero exit or death by a signal, fails the attempt (retried as configured) with the
  exit code or signal and the stderr tail; a program that cannot be started fails for good;
- on timeout, cancellation or worker shutdown, sends SIGTERM to the whole process group and
  SIGKILL after ``kill_grace`` seconds; if the worker itself dies, the supervisor does it.

Only the environment variables named in ``env`` are passed (plus ``extra_env`` and
``CONVEYOR_JOB_ID``/``CONVEYOR_ATTEMPT``); their values are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .errors import ConfigurationError, Permanent, ValidationError
from .supervise import SOURCE
from .task import AnyPayload

if TYPE_CHECKING:
    from .worker.context import Context

DEFAULT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
OUTPUT_LIMIT = 1_000_000
MESSAGE_LIMIT = 1000
READ_CHUNK = 65536
PROGRESS_LINE_LIMIT = 4096  # longer lines are never progress lines: not buffered for parsing
_PROGRESS = re.compile(rb"^PROGRESS:\s*(\S+?)%?(?:\s+(.*))?$")
_FORMATTER = string.Formatter()


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


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """How to run one command task (see the module docstring)."""

    argv: tuple[str, ...]
    shell: bool = False
    stdin: bool = True
    env: tuple[str, ...] = DEFAULT_ENV
    extra_env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    output_limit: int = OUTPUT_LIMIT
    kill_grace: float = 5.0
    memory_limit: int | None = None  # bytes of address space (RLIMIT_AS)
    cpu_limit: int | None = None  # seconds of CPU time (RLIMIT_CPU)

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ConfigurationError("command must be a non-empty list of strings (argv)")
        if self.shell and len(self.argv) != 1:
            raise ConfigurationError("with shell=True give the command as one string")
        if not isinstance(self.output_limit, int) or self.output_limit < 1024:
            raise ConfigurationError(
                f"output_limit must be >= 1024 bytes, got {self.output_limit!r}"
            )
        if not self.kill_grace >= 0:
            raise ConfigurationError(f"kill_grace must be >= 0 seconds, got {self.kill_grace!r}")
        for name, v in (("memory_limit", self.memory_limit), ("cpu_limit", self.cpu_limit)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigurationError(f"{name} must be a positive integer, got {v!r}")
        for k in self.extra_env:
            if not isinstance(k, str) or not k or "=" in k:
                raise ConfigurationError(f"extra_env: invalid variable name {k!r}")
        self.fields()  # placeholders must parse

    @classmethod
    def parse(cls, command: str | Sequence[str], **options: Any) -> CommandSpec:
        """``"python ingest.py {path}"`` (split like a shell would, no shell runs) or a list."""
        if isinstance(command, str):
            if options.get("shell"):
                return cls((command,), **options)
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise ConfigurationError(f"command {command!r}: {exc}") from None
            return cls(argv, **options)
        return cls(tuple(command), **options)

    def fields(self) -> set[str]:
        """Payload fields referenced as ``{field}`` in the arguments."""
        names: set[str] = set()
        for arg in self.argv:
            try:
                for _, name, spec, conv in _FORMATTER.parse(arg):
                    if name is None:
                        continue
                    if not name.isidentifier() or spec or conv:
                        raise ConfigurationError(
                            f"command argument {arg!r}: use plain {{field}} placeholders "
                            "(write {{ and }} for literal braces)"
                        )
                    names.add(name)
            except ValueError as exc:
                raise ConfigurationError(f"command argument {arg!r}: {exc}") from None
        return names

    def render(self, payload: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The argv to run, and the variables it needs. With ``shell=True`` a placeholder
        becomes ``"${CONVEYOR_ARG_<field>}"`` and its value an environment variable: the shell
        expands it as data, never as code, whatever quotes surround the placeholder."""
        values = {k: _arg_value(k, payload[k], self.shell) for k in self.fields()}
        if not self.shell:
            return [a.format_map(values) for a in self.argv], {}
        refs = {k: f'"${{CONVEYOR_ARG_{k}}}"' for k in values}
        env = {f"CONVEYOR_ARG_{k}": v for k, v in values.items()}
        return ["/bin/sh", "-c", self.argv[0].format_map(refs)], env


def _arg_value(name: str, value: Any, shell: bool) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        raise ValidationError(
            f"payload field {name!r} is used in the command line and must be a string or a "
            f"number, got {type(value).__name__}",
            field=f"payload.{name}",
        )
    text = str(value)
    if "\x00" in text:
        raise ValidationError(
            f"payload field {name!r} is used in the command line and cannot hold NUL characters",
            field=f"payload.{name}",
        )
    return text


class CommandPayload(AnyPayload):
    """Payload validation for a command task: any JSON object holding the placeholders' fields."""

    def __init__(self, name: str, spec: CommandSpec) -> None:
        super().__init__(name)
        self._spec = spec
        self._fields = sorted(spec.fields())

    def validate(self, payload: Any) -> dict[str, Any]:
        payload = super().validate(payload)
        for f in self._fields:
            if f not in payload:
                raise ValidationError(
                    f"command task {self._name!r}: missing required field 'payload.{f}' "
                    "(used in its command line)",
                    field=f"payload.{f}",
                )
            _arg_value(f, payload[f], self._spec.shell)
        try:
            orjson.dumps(payload)
        except TypeError as exc:
            raise ValidationError(f"payload is not JSON: {exc}", field="payload") from None
        return payload

    def json_schema(self) -> dict[str, Any] | None:
        return {"type": "object", "required": list(self._fields)}


class _Tail:
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


class _Progress:
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


async def _read_stdout(stream: asyncio.StreamReader, tail: _Tail, progress: _Progress) -> None:
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


async def _read_all(stream: asyncio.StreamReader, tail: _Tail) -> None:
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            break
        tail.add(chunk)


async def _write_stdin(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command does not read its stdin: fine
    finally:
        with contextlib.suppress(Exception):
            stream.close()


def _write_all(fd: int, data: bytes) -> None:
    """Write the supervisor's configuration and close the pipe (blocking: run in a thread)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the supervisor died first: its status (none) says so
    finally:
        os.close(fd)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_command(spec: CommandSpec, ctx: Context, payload: dict[str, Any]) -> Any:
    """One attempt of a command job (the handler of a command task)."""
    try:  # validated at enqueue by the app, but `conveyor enqueue` without --app cannot
        argv, arg_env = spec.render(payload)
    except KeyError as exc:
        raise CommandNotStarted(
            f"payload has no field {exc.args[0]!r}, which the command line uses",
            {"field": f"payload.{exc.args[0]}"},
        ) from None
    except ValidationError as exc:
        raise CommandNotStarted(str(exc), {"field": exc.field}) from None
    env = {k: os.environ[k] for k in spec.env if k in os.environ}
    env |= dict(spec.extra_env)
    env |= arg_env | {"CONVEYOR_JOB_ID": ctx.job.id, "CONVEYOR_ATTEMPT": str(ctx.job.attempt)}
    # The supervisor's configuration (argv, environment: maybe secrets) goes through a pipe,
    # never its command line, which any user can read in the process list.
    status_r, status_w = os.pipe()
    cfg_r, cfg_w = os.pipe()
    cfg = {"argv": argv, "env": env, "cwd": spec.cwd, "grace": spec.kill_grace,
           "memory": spec.memory_limit, "cpu": spec.cpu_limit, "status_fd": status_w,
           "parent": os.getpid()}  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", SOURCE, str(cfg_r),
            stdin=asyncio.subprocess.PIPE if spec.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, pass_fds=(status_w, cfg_r),
        )  # fmt: skip
    except BaseException:
        os.close(status_r)
        os.close(cfg_w)
        raise
    finally:
        os.close(status_w)
        os.close(cfg_r)
    await asyncio.to_thread(_write_all, cfg_w, orjson.dumps(cfg))
    out, err = _Tail(spec.output_limit), _Tail(spec.output_limit)
    progress = _Progress(ctx)
    assert proc.stdout is not None and proc.stderr is not None
    io = [
        asyncio.create_task(_read_stdout(proc.stdout, out, progress)),
        asyncio.create_task(_read_all(proc.stderr, err)),
    ]
    if spec.stdin:
        assert proc.stdin is not None
        io.append(asyncio.create_task(_write_stdin(proc.stdin, orjson.dumps(payload))))
    done = asyncio.create_task(_read_status(status_r))
    try:
        # The status pipe closes when the supervisor is done: the program ended and its group
        # was killed (``proc.wait()`` would also wait for every holder of stdout to close it).
        # Output still in the pipes is read then; a process that left the group (setsid) and
        # still holds them does not hold the job: it is waited for one second at most.
        status = await asyncio.shield(done)
        _, late = await asyncio.wait(io, timeout=1.0)
        if late:
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            with contextlib.suppress(Exception):
                proc._transport.close()  # type: ignore[attr-defined]  # release our pipe ends
    except BaseException:
        # Cancelled: timeout, job cancelled, or worker shutdown. Stop the whole group.
        await asyncio.shield(_terminate(proc, spec.kill_grace, io, done))
        raise
    await progress.flush()
    return _outcome(spec, argv, status, out, err)


async def _terminate(
    proc: asyncio.subprocess.Process,
    grace: float,
    io: list[asyncio.Task[Any]],
    done: asyncio.Task[dict[str, Any]],
) -> None:
    _kill_group(proc.pid, signal.SIGTERM)
    await asyncio.wait([done], timeout=grace + 0.5)
    _kill_group(proc.pid, signal.SIGKILL)  # whatever ignored SIGTERM, and any stragglers
    await asyncio.wait([done], timeout=2.0)
    for t in (*io, done):
        t.cancel()
    await asyncio.gather(*io, done, return_exceptions=True)
    with contextlib.suppress(Exception):
        proc._transport.close()  # type: ignore[attr-defined]


async def _read_status(fd: int) -> dict[str, Any]:
    """How the supervisor says the program ended, read until the pipe closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    try:
        data = await reader.read()
    finally:
        transport.close()
    try:
        status: dict[str, Any] = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        status = {}
    return status


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _outcome(
    spec: CommandSpec, argv: list[str], status: dict[str, Any], out: _Tail, err: _Tail
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


def _last_line(tail: _Tail) -> bytes | None:
    for line in reversed(bytes(tail.buf).splitlines()):
        if line.strip():
            return line.strip()
    return None
