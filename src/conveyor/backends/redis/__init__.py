"""Redis backend package (needs the ``redis`` extra: redis-py with hiredis)."""

from .backend import RedisBackend
from .connection import parse_redis_url

__all__ = ["RedisBackend", "parse_redis_url"]
