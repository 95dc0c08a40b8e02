"""Fixtures of the PostgreSQL-only tests: the session's cluster (``postgres_server``), a fresh
PostgreSQL schema per test (``pg_url``), and ``backend_url`` pointing there, so that tests
imported from the shared process suites run on PostgreSQL here."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


def plain(url: str) -> str:
    """The URL without conveyor's options: what psycopg.connect takes."""
    return url.split("?", 1)[0]


@pytest.fixture
def pg_url(postgres_server: Any) -> str:
    return f"{postgres_server.url}?schema=t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def backend_url(pg_url: str) -> str:
    return pg_url
