"""Backends and the URL -> backend factory."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..clock import Clock
from ..errors import ConfigurationError
from .base import Backend

SCHEMES = ("sqlite", "redis", "rediss", "redis+cluster", "postgresql", "postgres")


def open_backend(url: str, *, clock: Clock | None = None) -> Backend:
    """Create (not yet open) the backend a URL names. Raises ConfigurationError for a bad URL."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"backend URL must be a non-empty string, got {url!r}")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ConfigurationError(f"malformed backend URL {url!r}: {exc}") from None
    if scheme == "sqlite":
        from .sqlite import SqliteBackend

        return SqliteBackend(url, clock=clock)
    if scheme in ("redis", "rediss", "redis+cluster", "unix"):
        try:
            from .redis import RedisBackend
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                f"the redis backend needs redis-py: pip install 'conveyor[redis]' ({exc})"
            ) from None
        return RedisBackend(url, clock=clock)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                f"the postgres backend needs psycopg 3: pip install 'conveyor[postgres]' ({exc})"
            ) from None
        return PostgresBackend(url, clock=clock)
    if scheme in SCHEMES:
        raise ConfigurationError(f"the {scheme!r} backend is not available in this version yet")
    raise ConfigurationError(
        f"malformed backend URL {url!r}: unknown scheme {scheme!r} "
        "(expected sqlite:///path.db, redis://host:port/db, postgresql://host/db)"
    )


__all__ = ["Backend", "open_backend"]
