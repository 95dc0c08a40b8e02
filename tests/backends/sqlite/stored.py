"""What a SQLite store file holds, read with a plain connection: for the migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def stored_schema(path: Path) -> tuple[tuple[str] | None, set[str], set[str]]:
    """(the ``conveyor_meta`` schema row, the names in ``sqlite_master``, the ``jobs`` columns)."""
    with sqlite3.connect(path) as check:
        version = check.execute("SELECT value FROM conveyor_meta WHERE key = 'schema'").fetchone()
        names = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
        cols = {r[1] for r in check.execute("PRAGMA table_info(jobs)")}
    check.close()
    return version, names, cols
