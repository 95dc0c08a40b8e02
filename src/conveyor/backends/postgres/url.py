"""The PostgreSQL backend's URL: the libpq connection string and conveyor's own options.

``postgresql://user:pass@host:port/dbname?schema=conveyor&migrate=true&pool_max=10`` (also
``postgres://``). Conveyor's options are taken out of the query string; every other option is
passed to libpq as is (``sslmode``, ``connect_timeout``, ``application_name`` ...), and libpq
refuses what it does not know when the backend opens (a `ConfigurationError` then).

- ``schema``: the PostgreSQL schema that holds conveyor's tables (default ``conveyor``): several
  applications (or test runs) share one database without sharing jobs.
- ``migrate``: ``true`` (default) creates / migrates the schema on first use; ``false`` expects
  ``conveyor migrate`` to have been run (a `BackendCorrupt` names the versions otherwise).
- ``pool_min`` / ``pool_max``: connections per event loop (default 1 / 10).
- ``pool_timeout``: seconds a call waits for a free connection (default 30).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError

SCHEMES = ("postgresql", "postgres")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class PgOptions:
    conninfo: str  # the URL without conveyor's options (what libpq reads)
    schema: str = "conveyor"
    migrate: bool = True
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 30.0


def _int(key: str, value: str, low: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigurationError(f"postgres URL option {key}={value!r} is not an integer") from None
    if n < low:
        raise ConfigurationError(f"postgres URL option {key} must be >= {low}, got {n}")
    return n


def parse_postgres_url(url: str) -> PgOptions:
    """Split ``url`` into the libpq URL and conveyor's options; `ConfigurationError` for a bad
    option (the message names it)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed postgres URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(f"not a postgresql:// URL: scheme {parts.scheme!r}")
    opts: dict[str, object] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not _SCHEMA.fullmatch(value):
                raise ConfigurationError(
                    f"postgres URL option schema={value!r}: use lower-case letters, digits and "
                    "underscores, starting with a letter or underscore (at most 63)"
                )
            if value.startswith("pg_"):
                raise ConfigurationError(
                    f"postgres URL option schema={value!r}: names starting with pg_ are "
                    "reserved by PostgreSQL"
                )
            opts["schema"] = value
        elif key == "migrate":
            if value.lower() not in _TRUE:
                raise ConfigurationError(
                    f"postgres URL option migrate={value!r}: use true or false"
                )
            opts["migrate"] = _TRUE[value.lower()]
        elif key in ("pool_min", "pool_max"):
            opts[key] = _int(key, value, 0 if key == "pool_min" else 1)
        elif key == "pool_timeout":
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                raise ConfigurationError(
                    f"postgres URL option pool_timeout={value!r}: use a number of seconds > 0"
                )
            opts[key] = seconds
        else:
            rest.append((key, value))
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    out = PgOptions(conninfo, **opts)  # type: ignore[arg-type]
    if out.pool_min > out.pool_max:
        raise ConfigurationError(
            f"postgres URL options: pool_min={out.pool_min} is above pool_max={out.pool_max}"
        )
    return out


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


__all__ = ["SCHEMES", "PgOptions", "parse_postgres_url", "redact"]
