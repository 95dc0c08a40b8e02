"""SQLite backend package."""

from .backend import SqliteBackend, parse_sqlite_url

__all__ = ["SqliteBackend", "parse_sqlite_url"]
