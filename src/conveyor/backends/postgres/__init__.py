"""The PostgreSQL backend (``postgresql://``): psycopg 3, SKIP LOCKED claims, LISTEN/NOTIFY."""

from .backend import PostgresBackend

__all__ = ["PostgresBackend"]
