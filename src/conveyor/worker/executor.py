"""Run one attempt of one job and turn how it ended into an `Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import traceback
from concurrent.futures import Executor
from typing import Any

from ..awaiting import AwaitInput
from ..backends.base import Outcome, OutcomeKind
from ..errors import Permanent, Retry
from ..inputs import MAX_PAYLOAD_DEPTH_SETTING, json_problem
from ..job import Job
from ..task import Task
from .context import Context

log = logging.getLogger("conveyor.worker")
MAX_MESSAGE = 1000
MAX_TRACEBACK = 4000
_COMPLETED = OutcomeKind.COMPLETED


class JobTimeout(Exception):
    """The attempt ran past its task's timeout."""


def _text(exc: BaseException) -> str:
    """``str(exc)``, or its ``repr``, or its type: an exception's ``__str__`` may raise."""
    for show in (str, repr):
        try:
            return show(exc)[:MAX_MESSAGE]
        except Exception:
            continue
    return f"<{type(exc).__name__} whose str() and repr() raise>"


def error_info(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """The stored error: type, message (<= 1,000 chars) and the traceback's tail. Never raises:
    extra fields that JSON cannot hold are stored by the backend as their ``repr``."""
    info: dict[str, Any] = {"type": type(exc).__name__, "message": _text(exc)}
    fields = getattr(exc, "error_fields", None)
    if fields is not None:  # e.g. a command's exit code and stderr tail: no Python traceback
        try:
            extra = fields()
            if isinstance(extra, dict):
                info.update({str(k): v for k, v in extra.items() if k not in ("type",)})
            return info
        except Exception as inner:
            info["fields_error"] = f"error_fields() raised {type(inner).__name__}"
    if with_traceback:
        try:
            tb = "".join(traceback.format_exception(exc))
        except Exception:
            tb = "<the traceback could not be formatted>"
        info["traceback"] = tb[-MAX_TRACEBACK:]
    return info


async def run_handler(task: Task, job: Job, ctx: Context, pool: Executor) -> Any:
    """Call the handler with the job's payload; enforce the timeout."""
    kwargs = task.spec.to_kwargs(job.payload)
    if task.is_async:
        coro = task.fn(ctx, **kwargs) if task.spec.wants_ctx else task.fn(**kwargs)
        if job.timeout is None:
            return await coro
        try:
            async with asyncio.timeout(job.timeout):
                return await coro
        except TimeoutError:
            ctx._set_cancelled()
            raise JobTimeout(f"timed out after {job.timeout:g}s") from None
    call = (
        functools.partial(task.fn, ctx, **kwargs)
        if task.spec.wants_ctx
        else functools.partial(task.fn, **kwargs)
    )
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()
    # run_in_executor does not carry contextvars into the thread: the handler's log records
    # would not name their job (logs.current_job), nor its spans have the attempt's as parent.
    context = contextvars.copy_context()

    def in_thread() -> Any:
        # The timeout counts from here, not from the submission: a job never times out while
        # it waits for a thread.
        loop.call_soon_threadsafe(_set_done, started)
        return context.run(call)

    fut = loop.run_in_executor(pool, in_thread)
    if job.timeout is None:
        return await fut
    await asyncio.wait([started, fut], return_when=asyncio.FIRST_COMPLETED)
    try:
        async with asyncio.timeout(job.timeout):
            return await asyncio.shield(fut)  # the timeout must not cancel `fut`: we await it
    except TimeoutError:
        # A thread cannot be killed: tell the handler through ctx.cancelled and keep its slot
        # until it has really returned, so the next job does not queue behind it for a thread.
        ctx._set_cancelled()
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            raise
        except BaseException:  # its error no longer matters: the attempt timed out
            pass
        raise JobTimeout(
            f"timed out after {job.timeout:g}s (sync handler told via ctx.cancelled)"
        ) from None


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def outcome_for_result(job: Job, result: Any) -> Outcome:
    """A returned value -> completed; a value JSON would change (NaN stored as null, a tuple
    as a list) or cannot hold fails the attempt for good: the same code returns the same."""
    if type(result) is AwaitInput:  # park the job for a decision (conveyor.awaiting)
        return Outcome(job.id, job.token, OutcomeKind.AWAIT, wait=result)
    if result is not None and type(result) is not str:
        problem = json_problem(result, "result", MAX_PAYLOAD_DEPTH_SETTING)
        if problem is not None:
            return Outcome(
                job.id, job.token, OutcomeKind.FAILED,
                error={"type": "ResultNotSerializable",
                       "message": f"the handler returned a value JSON cannot hold as it is: "
                                  f"{problem}"[:MAX_MESSAGE]},
            )  # fmt: skip
    return Outcome(job.id, job.token, _COMPLETED, result)


def log_failed(job: Job, outcome: Outcome) -> None:
    """Log a failed attempt: retrying (info) or failed for good (warning); never the payload."""
    message = outcome.error and outcome.error["message"]
    if outcome.kind is OutcomeKind.RETRY:
        log.info("job %s (%s) attempt %d failed, retrying in %.2fs: %s", job.id, job.task,
                 job.attempt, outcome.retry_in, message)  # fmt: skip
    else:
        log.warning("job %s (%s) failed: %s", job.id, job.task, message)


def outcome_for_error(job: Job, exc: BaseException, task: Task | None) -> Outcome:
    """Failed attempt -> retry (with backoff, or Retry(after=...)) or final failure. Never
    raises: a job whose outcome cannot be computed fails, rather than staying active forever."""
    try:
        return _outcome_for_error(job, exc, task)
    except Exception as inner:
        err = error_info(exc)
        err["message"] = (f"{err['message']} (and deciding its retry failed: "
                          f"{type(inner).__name__}: {inner})")[:MAX_MESSAGE]  # fmt: skip
        return Outcome(job.id, job.token, OutcomeKind.FAILED, error=err)


def _outcome_for_error(job: Job, exc: BaseException, task: Task | None) -> Outcome:
    if isinstance(exc, Permanent):
        return Outcome(job.id, job.token, OutcomeKind.FAILED, error=error_info(exc))
    if job.attempt >= job.max_attempts:
        err = error_info(exc, with_traceback=not isinstance(exc, Retry | JobTimeout))
        if isinstance(exc, Retry):
            err["message"] = f"retry requested but attempts are used up: {exc.reason or 'Retry'}"
        return Outcome(job.id, job.token, OutcomeKind.FAILED, error=err)
    if isinstance(exc, Retry) and exc.after is not None:
        delay = exc.after
    elif task is not None:
        delay = task.options.backoff.delay(job.attempt)
    else:
        delay = 5.0
    err = error_info(exc, with_traceback=not isinstance(exc, Retry | JobTimeout))
    return Outcome(job.id, job.token, OutcomeKind.RETRY, error=err, retry_in=delay)
