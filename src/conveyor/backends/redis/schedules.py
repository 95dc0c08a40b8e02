"""Schedule state on Redis (`conveyor.backends.schedules`).

A schedule's state is the hash ``<prefix>:{<queue>}:cron:<name>`` (fields ``lt`` last tick
claimed, ``lf`` last tick fired, ``lj`` its job), in the slot of the queue its jobs go to: the
script `tick` (``cron.lua`` in front of ``enqueue.lua``, see `scripts.PRELUDES`) checks and
moves ``lt``, reads the previous job's state for the overlap policy and stores the job, all in
one script, also on Redis Cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..schedules import ScheduleState, TickClaim, TickOutcome, TickResult
from .producer import _rows, _specs

if TYPE_CHECKING:
    from .backend import RedisBackend


def _key(b: RedisBackend, name: str, queue: str) -> str:
    return b.key(queue, f"cron:{name}")


async def init_schedule(b: RedisBackend, name: str, queue: str, tick: int) -> int:
    pipe = b._client().pipeline(transaction=False)
    pipe.hsetnx(_key(b, name, queue), "lt", tick)
    pipe.hget(_key(b, name, queue), "lt")
    _, last = await pipe.execute()
    return int(last)


async def claim_tick(b: RedisBackend, c: TickClaim) -> TickOutcome:
    jobs = [c.job] if c.job is not None else []
    if jobs and c.queue not in b._known_queues:  # as enqueue_jobs: stats() lists known queues
        await b._client().sadd(f"{b.prefix}:queues", c.queue)
        b._known_queues.add(c.queue)
    idx = list(range(len(jobs)))
    args = [_rows(jobs, idx), _specs(jobs, idx), "", "", c.schedule, c.tick,
            "1" if c.skip_overlap else "0"]  # fmt: skip
    out = await b._eval("tick", c.queue, *args)
    code = out[0]
    if code == "TAKEN":
        return TickOutcome(TickResult.TAKEN, int(out[1]))
    if code == "CLAIMED":
        return TickOutcome(TickResult.CLAIMED, c.tick)
    if code == "BUSY":
        return TickOutcome(TickResult.BUSY, c.tick, out[2])
    b._saw_now(out[0])
    return TickOutcome(TickResult.FIRED, c.tick, out[1])


async def schedule_states(
    b: RedisBackend, items: Sequence[tuple[str, str]]
) -> dict[str, ScheduleState]:
    if not items:
        return {}
    pipe = b._client().pipeline(transaction=False)
    for name, queue in items:
        pipe.hmget(_key(b, name, queue), "lt", "lf", "lj")
    rows = await pipe.execute()
    out: dict[str, ScheduleState] = {}
    for (name, _), (lt, lf, lj) in zip(items, rows, strict=True):
        if lt is not None:
            out[name] = ScheduleState(int(lt), None if lf is None else int(lf), lj)
    return out
