"""Structured logs: which job a log record was emitted for, and the two formats of
``conveyor worker --log-format json|plain``.

The worker sets `current_job` at the start of each attempt (in the attempt's own asyncio task,
and copied into the thread of a sync handler), so every record emitted while a job runs (the
worker's own, ``ctx.log``, any library's logger) can name it. `JobFields` is the logging filter
that adds ``job_id``, ``task``, ``queue`` and ``attempt`` to a record: install it on a handler
(a logger's filters do not see records propagated from its children) to use the fields in your
own formats. Records carry what the worker knows of a job, never its payload or its result.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import IO, Any, Literal

import orjson

from .job import Job

LogFormat = Literal["plain", "json"]
FORMATS: tuple[LogFormat, ...] = ("plain", "json")
#: Bounds of what one record may print: a handler may log (or raise with) a 10 MB string.
MAX_MESSAGE = 4000
MAX_EXCEPTION = 4000
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The job whose attempt the current task (or handler thread) runs; None outside a job.
current_job: ContextVar[Job | None] = ContextVar("conveyor_current_job", default=None)
_FIELDS = ("job_id", "task", "queue", "attempt")
_structured = False
#: True once a `JobFields` exists: only then does the worker set `current_job` for each attempt.
wanted = False
_HANDLER = "conveyor-cli"  # the name of the handler `configure` installs


def truncate(text: str, bound: int) -> str:
    """``text`` cut to about ``bound`` characters, keeping its head and its tail (a traceback's
    last line names the error) and saying how much was left out."""
    if len(text) <= bound:
        return text
    head = bound // 3
    tail = bound - head
    return f"{text[:head]}\n... ({len(text) - bound} characters left out) ...\n{text[-tail:]}"


class JobFields(logging.Filter):
    """Adds ``job_id``, ``task``, ``queue`` and ``attempt`` to every record: the job the
    emitting task or handler thread runs, or None for each outside a job. Never drops a record.
    Making one turns the worker's `current_job` on (a process without one does not set it)."""

    def __init__(self, name: str = "") -> None:
        global wanted
        super().__init__(name)
        wanted = True

    def filter(self, record: logging.LogRecord) -> bool:
        job = current_job.get()
        if job is None:
            record.job_id = record.task = record.queue = record.attempt = None
        else:
            record.job_id, record.task = job.id, job.task
            record.queue, record.attempt = job.queue, job.attempt
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601, ms), ``level``, ``logger``, ``message``,
    the job fields when the record belongs to a job, ``exc`` (the traceback) and ``stack`` when
    the record has them. Message and traceback are bounded (`MAX_MESSAGE`, `MAX_EXCEPTION`)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad %-format in someone's log call: still one JSON line
            message = f"{record.msg!r} (formatting its arguments failed: {type(exc).__name__})"
        secs = int(record.created)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": truncate(message, MAX_MESSAGE),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            for name in _FIELDS:
                out[name] = getattr(record, name, None)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = truncate(record.exc_text, MAX_EXCEPTION)
        if record.stack_info:
            out["stack"] = truncate(self.formatStack(record.stack_info), MAX_EXCEPTION)
        return orjson.dumps(out, default=repr).decode()


class PlainFormatter(logging.Formatter):
    """The usual text line, with ``[job=... task=... queue=... attempt=...]`` appended to the
    records of a job, and message and traceback bounded like `JsonFormatter`'s."""

    def __init__(self, fmt: str = PLAIN) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = truncate(record.message, MAX_MESSAGE)
        line = super().formatMessage(record)
        if getattr(record, "job_id", None) is not None:
            line += (f" [job={record.job_id} task={record.task} queue={record.queue} "
                     f"attempt={record.attempt}]")  # fmt: skip
        return line

    def formatException(self, ei: Any) -> str:
        return truncate(super().formatException(ei), MAX_EXCEPTION)


def configure(level: str | int, fmt: LogFormat = "plain", stream: IO[str] | None = None) -> None:
    """Route every record to one handler on ``stream`` (stderr) in format ``fmt``, on the root
    logger, in place of the one an earlier call installed (other handlers stay: an app's own,
    a test runner's); the job fields are added to each record (`JobFields`)."""
    global _structured
    if fmt not in FORMATS:
        from .errors import ConfigurationError

        raise ConfigurationError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER)
    handler.addFilter(JobFields())
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _structured = fmt == "json"


def structured() -> bool:
    """True once `configure` chose JSON: the CLI's own messages then go through logging too."""
    return _structured


def say(message: str, logger: str = "conveyor.cli") -> None:
    """Emit a CLI message (a banner, a warning about options) as an INFO record whatever the
    level, so that under ``--log-format json`` every line on stderr is JSON."""
    log = logging.getLogger(logger)
    log.handle(log.makeRecord(logger, logging.INFO, "(cli)", 0, message, None, None))
