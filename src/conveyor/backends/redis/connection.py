"""Redis URLs and the connections made from them.

URL options (query string): conveyor's own ``prefix`` (key namespace, default ``cv``), and any
connection option of the redis-py installed (``socket_timeout``, ``client_name``,
``ssl_ca_certs``, ...). Anything else is a `ConfigurationError` when the app is built, never a
driver traceback at the first call.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError

SCHEMES = ("redis", "rediss", "unix", "redis+cluster")
DEFAULT_PREFIX = "cv"
# Options conveyor reads itself; the rest go to redis-py.
OWN_OPTIONS = frozenset({"prefix", "socket_timeout"})
# Connection options conveyor relies on: replies must be decoded str.
FIXED_OPTIONS = frozenset({"decode_responses", "encoding", "encoding_errors"})


@dataclass(frozen=True)
class RedisOptions:
    """A Redis URL, checked.

    Attributes:
        url: the URL for redis-py, without conveyor's own options (``redis://`` for a cluster).
        cluster: ``redis+cluster://``: build a cluster client.
        prefix: the key namespace.
        socket_timeout: seconds, as the URL gives it (None: redis-py's default).
        where: host:port or socket path, for messages (never the password).
    """

    url: str
    cluster: bool
    prefix: str
    socket_timeout: float | None
    where: str


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
        if name not in OWN_OPTIONS and name not in driver:
            raise ConfigurationError(_unknown(name, driver, url))
    prefix = query.pop("prefix", [DEFAULT_PREFIX])[-1]
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(f"redis URL option prefix={prefix!r} must be non-empty, no braces")
    socket_timeout = _seconds(query, "socket_timeout")
    scheme = "redis" if cluster else parts.scheme
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query, doseq=True), ""))
    _driver_check(clean, url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{port or 6379}"
    return RedisOptions(clean, cluster, prefix, socket_timeout, where)


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
    return frozenset(names - {"self", "host", "port", "startup_nodes"} - FIXED_OPTIONS)


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
