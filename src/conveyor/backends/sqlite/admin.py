"""Queue pause flags and API keys on SQLite: each function runs on the database thread in the
transaction `DbThread` opened (``now`` read under the write lock), like `ops`.

The pause flag is a row of ``paused_queues``; `ops.claim` reads that table in the claim's own
transaction, so a claim that commits after a pause never takes a job of the paused queue."""

from __future__ import annotations

import sqlite3
from typing import Any

from ...errors import ValidationError
from ..records import ApiKeyRecord, EventType
from .ops import add_events


def set_paused(conn: sqlite3.Connection, now: float, queue: str, paused: bool) -> bool:
    """Set or clear the queue's flag; True (and one event) when it changed."""
    if paused:
        cur = conn.execute(
            "INSERT INTO paused_queues (queue, since) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (queue, now),
        )
    else:
        cur = conn.execute("DELETE FROM paused_queues WHERE queue = ?", (queue,))
    if cur.rowcount == 0:
        return False
    kind = EventType.QUEUE_PAUSED if paused else EventType.QUEUE_RESUMED
    add_events(conn, [(kind.value, None, queue, None, None, now, None)])
    return True


def paused(conn: sqlite3.Connection) -> set[str]:
    """The paused queues (the claim's check and `paused_queues`)."""
    return {r[0] for r in conn.execute("SELECT queue FROM paused_queues")}


_KEY_COLS = "id, secret_hash, tenant, admin, read_only, name, created_at, revoked_at"


def _key(r: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5], r[6], r[7])


def store_key(conn: sqlite3.Connection, now: float, key: ApiKeyRecord) -> None:
    """Insert the record; `ValidationError` (nothing stored) when its id exists."""
    if conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key.id,)).fetchone():
        raise ValidationError(f"API key {key.id!r} already exists", field="id")
    conn.execute(
        f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (key.id, key.secret_hash, key.tenant, int(key.admin), int(key.read_only), key.name,
         key.created_at, key.revoked_at),
    )  # fmt: skip


def get_key(conn: sqlite3.Connection, key_id: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {_KEY_COLS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else _key(row)


def list_keys(conn: sqlite3.Connection, tenant: str | None) -> list[ApiKeyRecord]:
    """Oldest first; one tenant's through the index ``api_keys_tenant``."""
    if tenant is None:
        rows = conn.execute(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY seq")
    else:
        rows = conn.execute(
            f"SELECT {_KEY_COLS} FROM api_keys WHERE tenant = ? ORDER BY seq", (tenant,)
        )
    return [_key(r) for r in rows]


def revoke_key(conn: sqlite3.Connection, now: float, key_id: str) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
    )
    return cur.rowcount > 0
