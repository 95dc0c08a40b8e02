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
import signal
import sys
from typing import TYPE_CHECKING, Any

import orjson

from .command_output import (
    MESSAGE_LIMIT,
    PROGRESS_LINE_LIMIT,
    READ_CHUNK,
    CommandFailed,
    CommandNotStarted,
    ProgressFeed,
    Tail,
    outcome,
    parse_progress,
    read_all,
    read_stdout,
)
from .command_spec import DEFAULT_ENV, OUTPUT_LIMIT, CommandPayload, CommandSpec
from .errors import ValidationError
from .supervise import SOURCE

if TYPE_CHECKING:
    from .worker.context import Context

__all__ = [
    "DEFAULT_ENV",
    "MESSAGE_LIMIT",
    "OUTPUT_LIMIT",
    "PROGRESS_LINE_LIMIT",
    "READ_CHUNK",
    "CommandFailed",
    "CommandNotStarted",
    "CommandPayload",
    "CommandSpec",
    "parse_progress",
    "run_command",
]


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
    out, err = Tail(spec.output_limit), Tail(spec.output_limit)
    progress = ProgressFeed(ctx)
    assert proc.stdout is not None and proc.stderr is not None
    io = [
        asyncio.create_task(read_stdout(proc.stdout, out, progress)),
        asyncio.create_task(read_all(proc.stderr, err)),
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
    return outcome(spec, argv, status, out, err)


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
