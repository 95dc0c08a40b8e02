"""Hand-overs on Redis: the jobs an outcome creates, delivered through the finishing queue's
outbox (docs/architecture.md "Chains and the hand-over").

A script touches one slot and a queue is one slot, so the finish script cannot store a job in
another queue. It writes each job created with an applied outcome to its own queue's outbox
``<prefix>:{<queue>}:out`` (new job id -> entry), atomically with the outcome. `forward` then
stores each entry in its target queue by its fixed id through the enqueue script (an id stored
already creates nothing: idempotent) and only then deletes the entry. A worker forwards right
after the round that stored such outcomes; every worker also sweeps the outboxes of its queues
each maintenance pass, so entries a killed worker left behind are delivered by another.

Every hand-over goes through the outbox, also to the same queue: one path to get right (and the
same queue's finish and enqueue scripts run in one pipeline anyway, one round trip apart).
An entry is ``{"k": "job", "q": target queue, "row": enqueue.lua's row, "g": gate rules}``;
``k`` leaves room for other kinds of delivery (messages to a parent). Batch callbacks do not
use it: their decision spans every queue of a batch (`batches.py`, docs/architecture.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..base import NewJob
from .producer import _rows, _specs

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")


def entry(nj: NewJob) -> str:
    """The outbox entry of a job to create."""
    specs = _specs([nj], [0])
    return orjson.dumps({"k": "job", "q": nj.queue, "row": orjson.loads(_rows([nj], [0]))[0],
                         "g": orjson.loads(specs) if specs else None}).decode()  # fmt: skip


async def forward(b: RedisBackend, queues: Sequence[str]) -> int:
    """Deliver the outbox entries of ``queues``: enqueue each by its id (one enqueue script per
    target queue, one pipeline), then delete the entries whose enqueue succeeded. Idempotent
    and safe to run in many workers at once. Returns how many entries were delivered."""
    client = b._client()
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(b.key(q, "out"))
    boxes = await pipe.execute()
    rows: dict[str, list[Any]] = {}
    specs: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[tuple[str, str]]] = {}  # target -> (source queue, entry id)
    for q, box in zip(queues, boxes, strict=True):
        for job_id, text in box.items():
            e = orjson.loads(text)
            if e.get("k") != "job":
                log.error("outbox of queue %s: entry %s of unknown kind %r left in place", q,
                          job_id, e.get("k"))  # fmt: skip
                continue
            target = e["q"]
            rows.setdefault(target, []).append(e["row"])
            specs.setdefault(target, {}).update(e.get("g") or {})
            sources.setdefault(target, []).append((q, job_id))
    if not rows:
        return 0
    new = [q for q in rows if q not in b._known_queues]
    if new:
        await client.sadd(f"{b.prefix}:queues", *new)
        b._known_queues.update(new)
    calls = [("enqueue", q, [orjson.dumps(r).decode(), orjson.dumps(specs[q]).decode()
                             if specs[q] else "", "", ""]) for q, r in rows.items()]  # fmt: skip
    results = await b._pipeline(calls)
    done: dict[str, list[str]] = {}
    for target, res in zip(rows, results, strict=True):
        if isinstance(res, BaseException):
            log.error("forwarding hand-overs to queue %s failed (%s); left in the outbox",
                      target, str(res)[:200])  # fmt: skip
            continue
        for source, job_id in sources[target]:
            done.setdefault(source, []).append(job_id)
    pipe = client.pipeline(transaction=False)
    for source, ids in done.items():
        pipe.hdel(b.key(source, "out"), *ids)
    await pipe.execute()
    return sum(len(ids) for ids in done.values())
