"""The Redis backend's operations: each public call runs as one, taking a turn at the cluster
client's `Gate`, and translating redis-py's connection errors to `BackendUnavailable`.

**Producers fail fast.** A producer call (`PRODUCER_CALLS`: enqueue, get, list, cancel, retry,
stats, events, workers, queue pause flags, API keys) and ``open`` answer within ``deadline``
seconds, or raise `BackendUnavailable` naming the server. Without it a frozen server (SIGSTOP, a
stalled VM: the kernel still accepts connections, nothing replies) held a call for redis-py's
socket timeout and its retries (5 s at least, more with a pool to wait for), and a web request with
it. The deadline covers the wait for a pool connection, connecting and every retry; an enqueue of
many jobs gets `PER_JOB` more per job (a 100,000-job batch is a second of Lua). The worker's own
calls (claims, acknowledgements, lease renewals) are not cut short: its loops retry by themselves,
and a claim cut off after Redis ran it would strand the claimed jobs until their leases expire. Its
blocking reads have their socket timeouts above their block (`connection.make_client`). A read or
an enqueue whose connection broke (a restart the loop had not noticed) is sent once more.

**A cancelled call ends cancelled.** On Python 3.11 redis-py's sends go through
``asyncio.wait_for``, which returns the result when the cancel lands in the loop iteration where
the send completes, and drops the cancel: the caller's task goes on as if nothing was asked (an
``app.events()`` reader cancelled at that moment kept reading forever; a single ``get`` ignored
cancels sent 1-6 loop iterations after it began). Each operation therefore notes its task's
pending cancel requests (``Task.cancelling()``) when it begins and raises `CancelledError` if a
new one is still pending when the driver returns or fails: the caller's cancel, or a timeout
around the call (which then raises `TimeoutError`, as it should).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import BackendUnavailable

if TYPE_CHECKING:
    from .connection import RedisOptions

PER_JOB = 0.00002
#: Producer operations sent once more when a connection made before failed: reads, and enqueue
#: (a job id already stored is not stored again). Not cancel/retry: resent after they took
#: effect they would report a state error for a change that was made.
RESENDABLE = frozenset(
    {"enqueue_jobs", "get_job", "list_jobs", "batch_counts", "stats", "read_events",
     "last_event_cursor", "list_workers", "paused_queues", "get_api_key", "list_api_keys"}
)  # fmt: skip
#: The backend operations a producer makes, bounded by ``deadline``.
PRODUCER_CALLS = frozenset(
    {"enqueue_jobs", "get_job", "list_jobs", "cancel_job", "retry_job", "resume_job",
     "batch_counts", "stats",
     "read_events", "last_event_cursor", "list_workers", "set_queue_paused", "paused_queues",
     "store_api_key", "get_api_key", "list_api_keys", "revoke_api_key"}
)  # fmt: skip
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class Gate:
    """``pool_size`` turns for one cluster client: callers wait up to ``pool_timeout``."""

    def __init__(self, o: RedisOptions) -> None:
        self._options = o
        self._turns = asyncio.Semaphore(o.pool_size)

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self._options.pool_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise pool_exhausted(self._options) from None

    async def __aexit__(self, *exc: object) -> None:
        self._turns.release()


def pool_exhausted(o: RedisOptions) -> BackendUnavailable:
    return BackendUnavailable(
        f"no free connection to Redis at {o.where} within pool_timeout={o.pool_timeout:g}s: "
        f"all pool_size={o.pool_size} are busy (raise ?pool_size= or ?pool_timeout=)"
    )


def unavailable(o: RedisOptions, exc: BaseException) -> BackendUnavailable:
    """The `BackendUnavailable` for a driver's connection error (raise it ``from`` that)."""
    if _pool_timed_out(exc):
        return pool_exhausted(o)
    return BackendUnavailable(f"Redis at {o.where} unreachable: {exc}")


def no_answer(o: RedisOptions, limit: float) -> BackendUnavailable:
    """The `BackendUnavailable` for a call that ran out of its deadline."""
    return BackendUnavailable(
        f"Redis at {o.where} did not answer within {limit:g}s (deadline={o.deadline:g}s): is it "
        "running and responsive? Check the server, or raise ?deadline= in the URL. An enqueue "
        "cut off this way may have been stored (a spool forwards it by its id: never twice)"
    )


def _stale(exc: BaseException) -> bool:
    """A connection made before broke under a call (its server restarted, or the network cut
    it): worth one more try on a fresh connection. Not a failure to connect (the server is
    down: trying again at once would fail again), a timeout (a frozen server), nor a wait for
    a pool connection that ran out."""
    cause = exc.__cause__ if isinstance(exc, BackendUnavailable) else exc
    return (
        isinstance(cause, RedisConnectionError)
        and not _pool_timed_out(cause)
        and "connecting to" not in str(cause)
    )


def _pool_timed_out(exc: BaseException | None) -> bool:
    """BlockingConnectionPool's wait for a free connection ran out."""
    return (
        isinstance(exc, RedisConnectionError)
        and isinstance(exc.__cause__, asyncio.TimeoutError)
        and "No connection available" in str(exc)
    )


_IN_OPERATION = contextvars.ContextVar("conveyor_redis_operation", default=False)


def operations(cls: type[Any]) -> type[Any]:
    """Class decorator for the Redis backend: each public coroutine method (but ``open``,
    ``close``, ``listen``) runs as one operation. In cluster mode it takes a turn at the loop's
    `Gate` first; a driver connection error becomes `BackendUnavailable`, so callers (the
    worker's loops, users) never see redis-py's exceptions. An operation that calls another
    holds its one turn (no nesting, no deadlock)."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or name in ("open", "close", "listen"):
            continue
        if inspect.iscoroutinefunction(fn):
            setattr(cls, name, _operation(fn, name in PRODUCER_CALLS))
    return cls


def _operation(fn: F, producer: bool) -> F:
    @functools.wraps(fn)
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _IN_OPERATION.get():
            return await fn(self, *args, **kwargs)
        task = asyncio.current_task()
        asked = task.cancelling() if task is not None else 0
        token = _IN_OPERATION.set(True)
        try:
            result = await _translated(self, fn, producer, args, kwargs)
        except Exception as exc:
            _honour_cancel(task, asked, exc)
            raise
        finally:
            _IN_OPERATION.reset(token)
        _honour_cancel(task, asked, None)
        return result

    return run  # type: ignore[return-value]


def _honour_cancel(task: asyncio.Task[Any] | None, asked: int, exc: Exception | None) -> None:
    """Raise `CancelledError` if ``task`` was asked to cancel since it had ``asked`` pending
    requests and the driver swallowed it (see the module docstring)."""
    if task is not None and task.cancelling() > asked:
        raise asyncio.CancelledError("cancelled during a Redis call") from exc


async def _translated(self: Any, fn: F, producer: bool, args: Any, kwargs: Any) -> Any:
    """One operation: gated, bounded by ``deadline`` for a producer call (a resendable one
    sent once more on a stale connection), driver errors translated."""
    try:
        if not producer:
            return await _gated(self, fn, args, kwargs)
        o = self.options
        limit = o.deadline + (len(args[0]) * PER_JOB if fn.__name__ == "enqueue_jobs" else 0)
        with deadline(o, limit):
            async with asyncio.timeout(limit):
                if fn.__name__ not in RESENDABLE:
                    return await _gated(self, fn, args, kwargs)
                try:
                    return await _gated(self, fn, args, kwargs)
                except (RedisConnectionError, BackendUnavailable) as exc:
                    if not _stale(exc):
                        raise
                # redis-py dropped the broken connection: the pool hands out a fresh one
                return await _gated(self, fn, args, kwargs)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise unavailable(self.options, exc) from exc
    except BackendUnavailable as exc:
        if _pool_timed_out(exc.__cause__):  # translated by _eval/_pipeline: say why
            raise pool_exhausted(self.options) from exc.__cause__
        raise


async def _gated(self: Any, fn: F, args: Any, kwargs: Any) -> Any:
    gate = self.gate()
    if gate is None:
        return await fn(self, *args, **kwargs)
    async with gate:
        return await fn(self, *args, **kwargs)


@contextlib.contextmanager
def deadline(o: RedisOptions, limit: float) -> Iterator[None]:
    """Turn the `TimeoutError` of an ``asyncio.timeout(limit)`` inside into `no_answer`."""
    try:
        yield
    except TimeoutError as exc:
        raise no_answer(o, limit) from exc
