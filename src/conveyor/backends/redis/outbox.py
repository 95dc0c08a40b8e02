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
An entry is ``{"k": "job", "q": target queue, "row": enqueue.lua's row, "g": gate rules}``, or
for fan-in (docs/architecture.md "Fan-out and fan-in") ``{"k": "settle", "q": parent queue,
...}`` under ``settle:<child id>`` (a child's end for its parent, applied by settle.lua in the
parent's slot, which ignores repeats) or ``{"k": "cancel", "q": child queue, "j": child id}``
under ``cancel:<child id>`` (a failed or cancelled parent's pending child, cancel.lua). Applying
those writes new entries in other queues' outboxes (a cancelled child's settle, a failed
parent's own settle): `forward` follows them, a few rounds deep.
Batch callbacks do not use it: their decision spans every queue of a batch (`batches.py`,
docs/architecture.md). A settle that fails a parent for good (fail_parent) which is a batch
member counts it in its batch part; when that part ends, `forward` checks the parent queue's
batches at once (the ``bdirty`` sweep covers a forwarder killed first).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..base import NewJob
from . import batches as bt
from .producer import _rows, _specs

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")


def entry(nj: NewJob, edge: tuple[str, int] | None = None) -> str:
    """The outbox entry of a job to create; ``edge``: a fan-in child's (parent queue, spawn
    index), stored on the child (fields ``fq``, ``fi``) so that its end can settle its parent."""
    specs = _specs([nj], [0])
    row = orjson.loads(_rows([nj], [0]))[0]
    if edge is not None:
        row += [edge[0], edge[1]]
    return orjson.dumps({"k": "job", "q": nj.queue, "row": row,
                         "g": orjson.loads(specs) if specs else None}).decode()  # fmt: skip


#: Where the tenant is in an entry's row (`producer._rows`: id, task, payload, priority,
#: max_attempts, max_stalls, timeout, lease, delay, tenant, ...).
_TENANT = 9


def is_job_of(text: str, tenant: str | None) -> bool:
    """Whether an outbox entry is a job to create (not a settle or a cancel), of ``tenant``
    when one is given."""
    e = orjson.loads(text)
    if e.get("k") != "job":
        return False
    row = e.get("row") or ()
    return tenant is None or (len(row) > _TENANT and row[_TENANT] == tenant)


#: How many rounds `forward` follows entries that delivering others wrote.
FOLLOW = 4


async def forward(b: RedisBackend, queues: Sequence[str]) -> int:
    """Deliver the outbox entries of ``queues``, then of the queues that delivery wrote to
    (a cancelled child's settle, a failed parent's cancels), up to `FOLLOW` rounds. Idempotent
    and safe to run in many workers at once. Returns how many entries were delivered."""
    total, todo = 0, list(queues)
    ended: set[str] = set()  # queues where a settle ended a batch part (a failed parent)
    for _ in range(FOLLOW):
        n, touched = await _forward(b, todo, ended)
        total += n
        todo = [q for q in touched if q]
        if not todo:
            break
    if ended:
        try:
            await bt.settle(b, sorted(ended))
        except Exception as exc:
            log.error("checking batch callbacks after a fan-in settle failed (%s); the sweep of "
                      "bdirty retries", str(exc)[:200])  # fmt: skip
    return total


async def _forward(b: RedisBackend, queues: Sequence[str], ended: set[str]) -> tuple[int, set[str]]:
    """One round: enqueue job entries (one enqueue script per target queue) and apply settle
    and cancel entries (one script each), in one pipeline; delete the entries applied.
    Returns the count and the queues whose outboxes those scripts may have written to; adds
    to ``ended`` the queues where a settle ended a batch part (settle.lua returned 2)."""
    client = b._client()
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(b.key(q, "out"))
    boxes = await pipe.execute()
    rows: dict[str, list[Any]] = {}
    specs: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[tuple[str, str]]] = {}  # target -> (source queue, entry id)
    messages: list[tuple[tuple[str, str, list[Any]], str, str]] = []  # call, source, entry id
    for q, box in zip(queues, boxes, strict=True):
        for entry_id, text in box.items():
            e = orjson.loads(text)
            kind = e.get("k")
            if kind == "settle":
                messages.append((("settle", e["q"], [text]), q, entry_id))
                continue
            if kind == "cancel":
                messages.append((("cancel", e["q"], [e["j"], ""]), q, entry_id))
                continue
            if kind != "job":
                log.error("outbox of queue %s: entry %s of unknown kind %r left in place", q,
                          entry_id, kind)  # fmt: skip
                continue
            target = e["q"]
            rows.setdefault(target, []).append(e["row"])
            specs.setdefault(target, {}).update(e.get("g") or {})
            sources.setdefault(target, []).append((q, entry_id))
    if not rows and not messages:
        return 0, set()
    new = [q for q in rows if q not in b._known_queues]
    if new:
        await client.sadd(f"{b.prefix}:queues", *new)
        b._known_queues.update(new)
    calls = [("enqueue", q, [orjson.dumps(r).decode(), orjson.dumps(specs[q]).decode()
                             if specs[q] else "", "", ""]) for q, r in rows.items()]  # fmt: skip
    calls += [m[0] for m in messages]
    results = await b._pipeline(calls)
    done: dict[str, list[str]] = {}
    for target, res in zip(rows, results, strict=False):
        if isinstance(res, BaseException):
            log.error("forwarding hand-overs to queue %s failed (%s); left in the outbox",
                      target, str(res)[:200])  # fmt: skip
            continue
        for source, job_id in sources[target]:
            done.setdefault(source, []).append(job_id)
    touched: set[str] = set()
    for (call, source, entry_id), res in zip(messages, results[len(rows) :], strict=True):
        # A cancel of a child that ended meanwhile (STATE) or is gone (NOTFOUND) is done too.
        if isinstance(res, BaseException) and not str(res).startswith(("STATE", "NOTFOUND")):
            log.error("outbox of queue %s: %s %s failed (%s); left in place", source, call[0],
                      entry_id, str(res)[:200])  # fmt: skip
            continue
        done.setdefault(source, []).append(entry_id)
        touched.add(call[1])
        if call[0] == "settle" and res == 2:
            ended.add(call[1])
    pipe = client.pipeline(transaction=False)
    for source, ids in done.items():
        pipe.hdel(b.key(source, "out"), *ids)
    await pipe.execute()
    return sum(len(ids) for ids in done.values()), touched
