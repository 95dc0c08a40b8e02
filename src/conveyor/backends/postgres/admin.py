"""PostgreSQL queue flags, API keys, the worker registry, schedules and ``ctx.limit`` rate
gates. Each function runs in the caller's transaction (one per backend operation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ...errors import ValidationError
from ..base import ApiKeyRecord, EventType, TaskInfo, WorkerInfo
from ..schedules import ScheduleState, TickClaim, TickOutcome, TickResult
from . import enqueue as enq
from . import jobs as ops
from .sql import Conn, Schema


async def set_paused(conn: Conn, s: Schema, queue: str, paused: bool) -> bool:
    t = await ops.now(conn)
    if paused:
        cur = await conn.execute(
            s(
                "INSERT INTO {s}.paused_queues (queue, since) VALUES (%s, %s) ON CONFLICT DO NOTHING"
            ),
            (queue, t),
        )
    else:
        cur = await conn.execute(s("DELETE FROM {s}.paused_queues WHERE queue = %s"), (queue,))
        if cur.rowcount:
            await conn.execute("SELECT pg_notify(%s, %s)", (s.channel, f"w:{queue}"))
    if cur.rowcount == 0:
        return False
    kind = EventType.QUEUE_PAUSED if paused else EventType.QUEUE_RESUMED
    await ops.add_events(conn, s, [(kind.value, None, queue, None, None, t, None)])
    return True


async def paused(conn: Conn, s: Schema) -> set[str]:
    cur = await conn.execute(s("SELECT queue FROM {s}.paused_queues"))
    return {r[0] for r in await cur.fetchall()}


_KEY_COLS = "id, secret_hash, tenant, admin, read_only, name, created_at, revoked_at"


def _key(r: Sequence[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5], r[6], r[7])


async def store_key(conn: Conn, s: Schema, key: ApiKeyRecord) -> None:
    cur = await conn.execute(
        s(f"INSERT INTO {{s}}.api_keys ({_KEY_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
          "ON CONFLICT (id) DO NOTHING"),
        (key.id, key.secret_hash, key.tenant, key.admin, key.read_only, key.name,
         key.created_at, key.revoked_at),
    )  # fmt: skip
    if cur.rowcount == 0:
        raise ValidationError(f"API key {key.id!r} already exists", field="id")


async def get_key(conn: Conn, s: Schema, key_id: str) -> ApiKeyRecord | None:
    cur = await conn.execute(s(f"SELECT {_KEY_COLS} FROM {{s}}.api_keys WHERE id = %s"), (key_id,))
    row = await cur.fetchone()
    return None if row is None else _key(row)


async def list_keys(conn: Conn, s: Schema, tenant: str | None) -> list[ApiKeyRecord]:
    if tenant is None:
        cur = await conn.execute(s(f"SELECT {_KEY_COLS} FROM {{s}}.api_keys ORDER BY seq"))
    else:
        cur = await conn.execute(
            s(f"SELECT {_KEY_COLS} FROM {{s}}.api_keys WHERE tenant = %s ORDER BY seq"), (tenant,)
        )
    return [_key(r) for r in await cur.fetchall()]


async def revoke_key(conn: Conn, s: Schema, key_id: str) -> bool:
    t = await ops.now(conn)
    cur = await conn.execute(
        s("UPDATE {s}.api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"),
        (t, key_id),
    )
    return bool(cur.rowcount)


_WORKER_COLS = (
    "id, queues, concurrency, active, pid, host, started_at, seen_at, ttl, running, processed, "
    "failed, tasks"
)


async def worker_heartbeat(conn: Conn, s: Schema, w: WorkerInfo) -> None:
    t = await ops.now(conn)
    dumps = orjson.dumps
    await conn.execute(
        s(f"INSERT INTO {{s}}.workers ({_WORKER_COLS}) VALUES "
          "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
          "ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, "
          "concurrency = excluded.concurrency, active = excluded.active, "
          "seen_at = excluded.seen_at, ttl = excluded.ttl, running = excluded.running, "
          "processed = excluded.processed, failed = excluded.failed, tasks = excluded.tasks"),
        (w.id, dumps(list(w.queues)).decode(), w.concurrency, w.active, w.pid, w.host,
         w.started_at, t, w.ttl, dumps(list(w.running)).decode(), w.processed, w.failed,
         dumps([x.to_dict() for x in w.tasks]).decode()),
    )  # fmt: skip
    await conn.execute(s("DELETE FROM {s}.workers WHERE seen_at < %s - ttl"), (t,))


async def remove_worker(conn: Conn, s: Schema, worker: str) -> None:
    await conn.execute(s("DELETE FROM {s}.workers WHERE id = %s"), (worker,))


async def list_workers(conn: Conn, s: Schema) -> list[WorkerInfo]:
    t = await ops.now(conn)
    cur = await conn.execute(
        s(f"SELECT {_WORKER_COLS} FROM {{s}}.workers WHERE seen_at >= %s - ttl ORDER BY id"), (t,)
    )
    loads = orjson.loads
    return [
        WorkerInfo(r[0], loads(r[1]), r[2], r[3], r[4], r[5], r[6], r[8], loads(r[9]), r[10],
                   r[11], [TaskInfo.from_dict(x) for x in loads(r[12])], r[7])
        for r in await cur.fetchall()
    ]  # fmt: skip


async def reserve_rate(conn: Conn, s: Schema, name: str, interval: float, burst: int) -> float:
    """GCRA on a process-independent gate: the row lock orders concurrent reservations, and
    the time is read once the row is locked (a reservation that waited for it counts from then,
    not from before its wait)."""
    spec = orjson.dumps({"k": "rate", "i": interval, "b": burst}).decode()
    await conn.execute(
        s("INSERT INTO {s}.gates (queue, name, spec, tat) VALUES ('', %s, %s, 0) "
          "ON CONFLICT DO NOTHING"),
        (name, spec),
    )  # fmt: skip
    cur = await conn.execute(
        s("SELECT tat FROM {s}.gates WHERE queue = '' AND name = %s FOR UPDATE"), (name,)
    )
    tat = (await cur.fetchone())[0]
    t = await ops.now(conn)
    base = max(tat, t)
    await conn.execute(
        s("UPDATE {s}.gates SET spec = %s, tat = %s WHERE queue = '' AND name = %s"),
        (spec, base + interval, name),
    )
    return max(0.0, base - (burst - 1) * interval - t)


async def init_schedule(conn: Conn, s: Schema, name: str, queue: str, tick: int) -> int:
    await conn.execute(
        s("INSERT INTO {s}.schedules (queue, name, last_tick) VALUES (%s, %s, %s) "
          "ON CONFLICT DO NOTHING"),
        (queue, name, tick),
    )  # fmt: skip
    cur = await conn.execute(
        s("SELECT last_tick FROM {s}.schedules WHERE queue = %s AND name = %s"), (queue, name)
    )
    return int((await cur.fetchone())[0])


_FINAL = ("completed", "failed", "cancelled")


async def claim_tick(conn: Conn, s: Schema, c: TickClaim) -> TickOutcome:
    """Move the schedule's last tick forward and enqueue the tick's job in one transaction;
    the schedule row (created first if missing) is locked, so of two schedulers claiming the
    same tick the second waits and then sees the first's tick."""
    await conn.execute(
        s("INSERT INTO {s}.schedules (queue, name, last_tick) VALUES (%s, %s, -9223372036854775808) "
          "ON CONFLICT DO NOTHING"),
        (c.queue, c.schedule),
    )  # fmt: skip
    cur = await conn.execute(
        s("SELECT last_tick, last_job FROM {s}.schedules WHERE queue = %s AND name = %s "
          "FOR UPDATE"),
        (c.queue, c.schedule),
    )  # fmt: skip
    last, previous = await cur.fetchone()
    if last >= c.tick:
        return TickOutcome(TickResult.TAKEN, int(last))
    await conn.execute(
        s("UPDATE {s}.schedules SET last_tick = %s WHERE queue = %s AND name = %s"),
        (c.tick, c.queue, c.schedule),
    )
    if c.job is None:
        return TickOutcome(TickResult.CLAIMED, c.tick)
    if c.skip_overlap and previous is not None:
        cur = await conn.execute(s("SELECT status FROM {s}.jobs WHERE id = %s"), (previous,))
        row = await cur.fetchone()
        if row is not None and row[0] not in _FINAL:
            return TickOutcome(TickResult.BUSY, c.tick, previous)
    res = await enq.enqueue(conn, s, [c.job])
    await conn.execute(
        s("UPDATE {s}.schedules SET last_fire = %s, last_job = %s WHERE queue = %s AND name = %s"),
        (c.tick, res.ids[0], c.queue, c.schedule),
    )
    return TickOutcome(TickResult.FIRED, c.tick, res.ids[0])


async def schedule_states(
    conn: Conn, s: Schema, items: Sequence[tuple[str, str]]
) -> dict[str, ScheduleState]:
    out: dict[str, ScheduleState] = {}
    for name, queue in items:
        cur = await conn.execute(
            s("SELECT last_tick, last_fire, last_job FROM {s}.schedules "
              "WHERE queue = %s AND name = %s AND last_tick > -9223372036854775808"),
            (queue, name),
        )  # fmt: skip
        row = await cur.fetchone()
        if row is not None:
            out[name] = ScheduleState(int(row[0]), row[1], row[2])
    return out
