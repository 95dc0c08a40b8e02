"""Redis URLs, the connections made from them, and driver errors translated at the boundary.

URL options (query string): conveyor's own ``prefix`` (key namespace, default ``cv``),
``pool_size`` (connections per event loop, default 50; per node in a cluster) and
``pool_timeout`` (seconds a call waits for a free connection, default 20), ``deadline``
(seconds a producer call may take in all, default 1.5: see below), and any connection
option of the redis-py installed (``socket_timeout``, ``client_name``, ``ssl_ca_certs``, ...).
Anything else is a `ConfigurationError` when the app is built, never a driver traceback at the
first call.

**Bounded, blocking pools.** Many concurrent calls (an HTTP server's requests) wait for a free
connection instead of failing: a standalone client gets redis-py's `BlockingConnectionPool`;
redis-py's cluster client has no blocking pool (a node whose connections are all in use raises
``MaxConnectionsError``), so there each backend call first takes a turn at a `Gate` of
``pool_size`` turns, which bounds the connections per node to the same number.

**Producers fail fast.** A producer call (`PRODUCER_CALLS`: enqueue, get, list, cancel, retry,
stats, events, workers) and ``open`` answer within ``deadline`` seconds, or raise
`BackendUnavailable` naming the server. Without it a frozen server (SIGSTOP, a stalled VM: the
kernel still accepts connections, nothing replies) held a call for redis-py's socket timeout
and its retries (5 s at least, more with a pool to wait for), and a web request with it. The
deadline covers the wait for a pool connection, connecting and every retry; an enqueue of
many jobs gets `PER_JOB` more per job (a 100,000-job batch is a second of Lua). The worker's
own calls (claims, acknowledgements, lease renewals) are not cut short: its loops retry by
themselves, and a claim cut off after Redis ran it would strand the claimed jobs until their
leases expire. Its blocking reads have their socket timeouts above their block (`make_client`). A read or
an enqueue whose connection broke (a restart the loop had not noticed) is sent once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from ...errors import BackendUnavailable, ConfigurationError

SCHEMES = ("redis", "rediss", "unix", "redis+cluster")
DEFAULT_PREFIX = "cv"
POOL_SIZE = 50
POOL_TIMEOUT = 20.0
HEALTH_CHECK_INTERVAL = 30
# A blocking read's socket timeout exceeds the block by this much (the reply's round trip; a
# dead connection is still noticed within seconds).
BLOCK_MARGIN = 5.0
# Cluster: connections per node beyond the gate's turns, for the few calls made outside
# backend operations (a listener's pokes), so they never meet MaxConnectionsError.
CLUSTER_SPARE = 4
# Options conveyor reads itself; the rest go to redis-py.
OWN_OPTIONS = frozenset({"prefix", "pool_size", "pool_timeout", "socket_timeout", "deadline"})
DEADLINE = 1.5
PER_JOB = 0.00002
#: Producer operations sent once more when a connection made before failed: reads, and enqueue
#: (a job id already stored is not stored again). Not cancel/retry: resent after they took
#: effect they would report a state error for a change that was made.
RESENDABLE = frozenset(
    {"enqueue_jobs", "get_job", "list_jobs", "batch_counts", "stats", "read_events",
     "last_event_cursor", "list_workers"}
)  # fmt: skip
#: The backend operations a producer makes, bounded by ``deadline``.
PRODUCER_CALLS = frozenset(
    {"enqueue_jobs", "get_job", "list_jobs", "cancel_job", "retry_job", "batch_counts", "stats",
     "read_events", "last_event_cursor", "list_workers"}
)  # fmt: skip
# redis-py's URL names for what conveyor's pool options set.
RENAMED = {"max_connections": "pool_size", "timeout": "pool_timeout"}
# Connection options conveyor relies on: replies must be decoded str.
FIXED_OPTIONS = frozenset({"decode_responses", "encoding", "encoding_errors"})
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class RedisOptions:
    """A Redis URL, checked.

    Attributes:
        url: the URL for redis-py, without conveyor's own options (``redis://`` for a cluster).
        cluster: ``redis+cluster://``: build a cluster client.
        prefix: the key namespace.
        pool_size: connections per event loop (cluster: per node and event loop).
        pool_timeout: seconds a call waits for a free connection.
        socket_timeout: seconds, as the URL gives it (None: redis-py's default).
        where: host:port or socket path, for messages (never the password).
        deadline: seconds a producer call (and ``open``) may take before it fails.
    """

    url: str
    cluster: bool
    prefix: str
    pool_size: int
    pool_timeout: float
    socket_timeout: float | None
    where: str
    deadline: float = DEADLINE


def redis_options(url: str) -> RedisOptions:
    """Check a Redis URL (no I/O). Raises `ConfigurationError` naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(f"not a redis URL: {redact(url)!r}")
    cluster = parts.scheme == "redis+cluster"
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"malformed redis URL {redact(url)!r}: no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"malformed redis URL {redact(url)!r}: {exc}") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    driver = driver_options(cluster)
    for name in query:
        if name in RENAMED:
            raise ConfigurationError(
                f"redis URL option {name!r}: use {RENAMED[name]}= (conveyor's pool option)"
            )
        if name not in OWN_OPTIONS and name not in driver:
            raise ConfigurationError(_unknown(name, driver, url))
    prefix = query.pop("prefix", [DEFAULT_PREFIX])[-1]
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(f"redis URL option prefix={prefix!r} must be non-empty, no braces")
    socket_timeout = _seconds(query, "socket_timeout")
    pool_timeout = _seconds(query, "pool_timeout")
    deadline = _seconds(query, "deadline")
    pool_size = query.pop("pool_size", [str(POOL_SIZE)])[-1]
    if not pool_size.isdigit() or int(pool_size) < 1:
        raise ConfigurationError(
            f"redis URL option pool_size={pool_size!r} must be an integer >= 1"
        )
    scheme = "redis" if cluster else parts.scheme
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query, doseq=True), ""))
    _driver_check(clean, url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{port or 6379}"
    return RedisOptions(
        clean, cluster, prefix, int(pool_size),
        POOL_TIMEOUT if pool_timeout is None else pool_timeout, socket_timeout, where,
        DEADLINE if deadline is None else deadline,
    )  # fmt: skip


def parse_redis_url(url: str) -> tuple[str, bool, str]:
    """Return (url for redis-py, cluster?, key prefix)."""
    o = redis_options(url)
    return o.url, o.cluster, o.prefix


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@functools.cache
def driver_options(cluster: bool) -> frozenset[str]:
    """The connection options of the installed redis-py (they differ between versions) that a
    URL can give: those redis-py converts from text, and text ones (not objects, callbacks)."""
    from redis.asyncio import cluster as rc
    from redis.asyncio import connection as c

    typed = c.URL_QUERY_ARGUMENT_PARSERS

    makers = (
        [rc.RedisCluster.__init__]
        if cluster
        else [
            cls.__init__
            for cls in (c.AbstractConnection, c.Connection, c.SSLConnection,
                        c.UnixDomainSocketConnection)
        ]
    )  # fmt: skip
    names = {
        p.name
        for fn in makers
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and (
            p.name in typed or ("str" in str(p.annotation) and "Callable" not in str(p.annotation))
        )
    }
    return frozenset(
        names - {"self", "host", "port", "startup_nodes"} - FIXED_OPTIONS - set(RENAMED)
    )


def _unknown(name: str, driver: frozenset[str], url: str) -> str:
    close = difflib.get_close_matches(name, sorted(OWN_OPTIONS | driver), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown redis URL option {name!r} in {redact(url)!r}{hint}"


def _seconds(query: dict[str, list[str]], name: str) -> float | None:
    if name not in query:
        return None
    value = query.pop(name)[-1]
    try:
        secs = float(value)
    except ValueError:
        secs = -1.0
    if not secs > 0 or secs == float("inf"):
        raise ConfigurationError(
            f"redis URL option {name}={value!r} is not a number of seconds > 0"
        )
    return secs


def _driver_check(clean: str, url: str) -> None:
    """redis-py's own checks of the options it reads (types, ssl flags), still without I/O."""
    from redis.asyncio.connection import parse_url

    try:
        parse_url(clean)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"redis URL {redact(url)!r}: {exc}") from None


# -- clients ----------------------------------------------------------------------------------


def make_client(o: RedisOptions, *, single: bool = False, block: float | None = None) -> Any:
    """A client with a pool of its own (redis-py connections belong to one event loop).
    ``single``: one dedicated connection. ``block``: the longest blocking command it sends
    (BZPOPMIN's timeout); its socket timeout is kept above that, else the client gives up on
    a reply that is simply not due yet (redis-py 8's default timeout, 5 s, is exactly the
    listener's block)."""
    kw: dict[str, Any] = {"decode_responses": True, "health_check_interval": HEALTH_CHECK_INTERVAL}
    timeout = o.socket_timeout
    if block is not None:
        timeout = max(timeout or 0.0, block + BLOCK_MARGIN)
    if timeout is not None:
        kw["socket_timeout"] = timeout
    if o.cluster:
        return _RedisCluster.from_url(o.url, max_connections=o.pool_size + CLUSTER_SPARE, **kw)
    # Maintenance notifications off: while they are on ("auto", redis-py 8's default, even
    # on RESP2) the pool skips its check of an idle connection before handing it out, so each
    # connection that outlived a Redis restart failed its next command ("Connection closed by
    # server") instead of being reconnected first.
    pool = aioredis.BlockingConnectionPool.from_url(
        o.url, max_connections=o.pool_size, timeout=o.pool_timeout,
        maint_notifications_config=MaintNotificationsConfig(enabled=False), **kw,
    )  # fmt: skip
    client = aioredis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True  # closing the client closes its pool
    return client


class _RedisCluster(aioredis.RedisCluster):
    """redis-py's cluster client, initialised before it routes a command.

    redis-py 8 picks a command's routing policy *before* it initialises the client: while the
    client has no default node (its first commands, or any after it reset its topology) a keyed
    command such as SADD/SMEMBERS is routed as keyless, to a random node, which answers MOVED.
    Many such calls at once on one loop (``app.sync`` from 16 threads) pile up MOVED replies;
    every ``reinitialize_steps``-th one makes redis-py ``aclose()`` the client, which drops the
    connections other calls of the loop are still using, even mid-handshake: they fail with
    ``AttributeError: 'NoneType' object has no attribute 'writelines'`` instead of a result.
    Initialising first (a no-op once initialised; concurrent callers wait on redis-py's lock
    for one initialisation) routes every command by its key's slot from the start."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.initialize()
        return await super().execute_command(*args, **kwargs)


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


# -- backend operations -------------------------------------------------------------------------

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
        token = _IN_OPERATION.set(True)
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
        finally:
            _IN_OPERATION.reset(token)

    return run  # type: ignore[return-value]


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
