"""The worker registry on Redis: live workers expire with their heartbeat.

Keys carry their own hash tag ``{workers}`` (one Cluster slot): ``live`` is a sorted set of worker
id -> heartbeat expiry, ``w:<id>`` a hash (``i``: the worker's report as JSON, ``s``: last seen)
with a TTL of the heartbeat. A heartbeat drops the expired entries of ``live`` (O(log n +
expired)), so a crashed worker leaves no data behind and nothing reads every worker ever seen.
``live`` and ``w:`` are no queue key's suffixes, so a queue named ``workers`` cannot collide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ..base import WorkerInfo

if TYPE_CHECKING:
    from .backend import RedisBackend


def prefix(backend: RedisBackend) -> str:
    return f"{backend.prefix}:{{workers}}:"


async def heartbeat(backend: RedisBackend, info: WorkerInfo) -> None:
    """Record ``info`` until its ttl runs out (script ``heartbeat``)."""
    data = info.to_dict()
    del data["last_seen"]  # the backend's to set
    now = await backend._eval("heartbeat", "", info.id, orjson.dumps(data).decode(),
                              repr(float(info.ttl)), prefix=prefix(backend))  # fmt: skip
    backend._saw_now(now)
    if not backend.old_registry_gone:
        # Before, the registry was one hash (cv:workers) that kept dead workers forever.
        await backend._client().delete(f"{backend.prefix}:workers")
        backend.old_registry_gone = True


async def remove(backend: RedisBackend, worker: str) -> None:
    pipe = backend._client().pipeline(transaction=False)
    pipe.zrem(prefix(backend) + "live", worker)
    pipe.delete(prefix(backend) + f"w:{worker}")
    await pipe.execute()


async def live(backend: RedisBackend) -> list[WorkerInfo]:
    """The live workers by id, read at one instant of Redis's clock (script ``workers``)."""
    out = await backend._eval("workers", "", prefix=prefix(backend))
    backend._saw_now(out[0])
    found: list[WorkerInfo] = []
    for k in range(1, len(out), 3):
        report = orjson.loads(out[k + 2]) | {"last_seen": float(out[k + 1])}
        found.append(WorkerInfo.from_dict(report))
    return sorted(found, key=lambda w: w.id)
