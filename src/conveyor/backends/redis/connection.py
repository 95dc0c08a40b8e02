"""Redis URLs and the clients made from them; the backend operations wrapper (pool turns,
producer deadlines, driver errors translated at the boundary) is in `operations`.

URL options (query string): conveyor's own ``prefix`` (key namespace, default ``cv``),
``pool_size`` (connections per event loop, default 50; per node in a cluster) and
``pool_timeout`` (seconds a call waits for a free connection, default 20), ``deadline``
(seconds a producer call may take in all, default 1.5: see `operations`), and any connection
option of the redis-py installed (``socket_timeout``, ``client_name``, ``ssl_ca_certs``, ...).
Anything else is a `ConfigurationError` when the app is built, never a driver traceback at the
first call.

**Bounded, blocking pools.** Many concurrent calls (an HTTP server's requests) wait for a free
connection instead of failing: a standalone client gets redis-py's `BlockingConnectionPool`;
redis-py's cluster client has no blocking pool (a node whose connections are all in use raises
``MaxConnectionsError``), so there each backend call first takes a turn at a `Gate` of
``pool_size`` turns (`operations`), which bounds the connections per node to the same number.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.maint_notifications import MaintNotificationsConfig

from ...errors import ConfigurationError
from .operations import (
    PER_JOB,
    PRODUCER_CALLS,
    RESENDABLE,
    Gate,
    deadline,
    no_answer,
    operations,
    pool_exhausted,
    unavailable,
)

__all__ = [
    "DEADLINE",
    "PER_JOB",
    "PRODUCER_CALLS",
    "RESENDABLE",
    "Gate",
    "RedisOptions",
    "deadline",
    "driver_options",
    "make_client",
    "no_answer",
    "operations",
    "parse_redis_url",
    "pool_exhausted",
    "redact",
    "redis_options",
    "unavailable",
]

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
# redis-py's URL names for what conveyor's pool options set.
RENAMED = {"max_connections": "pool_size", "timeout": "pool_timeout"}
# Connection options conveyor relies on: replies must be decoded str.
FIXED_OPTIONS = frozenset({"decode_responses", "encoding", "encoding_errors"})


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
