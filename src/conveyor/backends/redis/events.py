"""The Redis event log: one stream per queue (``<prefix>:{q}:events``), read as one log through a
composite cursor.

Queues live in different Cluster slots, so no script can write a backend-wide sequence in the
same atomic step as a transition without a cross-slot write per event. Instead a cursor holds
one stream position per queue (absent: the queue's start): a reader gets each event exactly
once however queues interleave, in Cluster too, and queues created after the cursor was issued
are read from their start. Streams are merged by stream id (the node's millisecond clock), then
queue name: commit order within a queue, time order across queues.

Cursor text: ``r`` followed by ``~<queue>~<ms>~<seq>`` per queue with a position, sorted by
queue, numbers in base 36 (empty for 0); queue names cannot contain ``~``. About 12 characters
plus the name per queue. ``0`` is read as ``r`` (every queue at its start) and ``oldest``
(`EVENTS_OLDEST`) as every queue at its oldest kept event (never reports a trim).

Trimming goes only through ``trim.lua``, which records the newest deleted id (``evcut``), so a
reader behind it gets `EventsTrimmed` instead of a silent gap; XADD never trims.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import EventsTrimmed, ValidationError
from ..base import EVENTS_OLDEST, Event, EventFilter, EventPage, EventRetention, EventType

if TYPE_CHECKING:
    from .backend import RedisBackend

Position = tuple[int, int]  # a stream id: (milliseconds, sequence)
_ORIGIN: Position = (0, 0)
_TYPES = {e.value: e for e in EventType}
_QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")  # conveyor queue names (task.py)
_B36 = re.compile(r"[0-9a-z]{0,14}")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
SCAN = 1000  # entries one filtered read examines per queue at most
TRIM_READ = 1000  # entries a count trim reads at most when the queue has no mark yet
JOB_LEEWAY_MS = 1000  # a job's first event is no earlier than its created_at minus this


def _b36(n: int) -> str:
    if n == 0:
        return ""
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


def _segment(queue: str, pos: Position) -> str:
    return f"~{queue}~{_b36(pos[0])}~{_b36(pos[1])}"


def encode(positions: Mapping[str, Position]) -> str:
    """The cursor text of per-queue positions (queues at their start are left out)."""
    return "r" + "".join(_segment(q, p) for q, p in sorted(positions.items()) if p != _ORIGIN)


def decode(cursor: str) -> tuple[dict[str, Position], bool]:
    """(positions, from the oldest kept event?) of a cursor; ValidationError if malformed."""
    if cursor == EVENTS_OLDEST:
        return {}, True
    if cursor == "0":
        return {}, False
    parts = cursor.split("~")
    if parts[0] != "r" or len(parts) % 3 != 1:
        raise ValidationError(f"invalid event cursor {cursor!r}", field="since")
    out: dict[str, Position] = {}
    for k in range(1, len(parts), 3):
        q, ms, seq = parts[k : k + 3]
        if not _QUEUE.fullmatch(q) or q in out or not _B36.fullmatch(ms + seq):
            raise ValidationError(f"invalid event cursor {cursor!r}", field="since")
        out[q] = (int(ms or "0", 36), int(seq or "0", 36))
    return out, False


def sid(pos: Position) -> str:
    return f"{pos[0]}-{pos[1]}"


def parse_sid(text: str) -> Position:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class EventLog:
    """Reads, heads and trims the per-queue event streams of one `RedisBackend`."""

    def __init__(self, backend: RedisBackend) -> None:
        self._b = backend

    async def _targets(self, where: EventFilter | None) -> list[tuple[str, Position | None]]:
        """The queues a read must look at, each with the earliest position that can match."""
        if where is None:
            return [(q, None) for q in await self._b._queues()]
        queues = [where.queue] if where.queue else await self._b._queues()
        if where.job_id is None:
            return [(q, None) for q in queues]
        # A job's events are all in its queue, none before it was created (Redis's clock):
        # read that queue from there. A job deleted by retention is looked for everywhere.
        pipe = self._b._client().pipeline(transaction=False)
        for q in queues:
            pipe.hget(self._b.key(q, f"j:{where.job_id}"), "c")
        for q, created in zip(queues, await pipe.execute(), strict=True):
            if created is not None:
                return [(q, (max(0, int(float(created) * 1000) - JOB_LEEWAY_MS), 0))]
        return [(q, None) for q in queues]

    async def read(self, since: str, limit: int, where: EventFilter | None) -> EventPage:
        """See `Backend.read_events`. One script per queue, all in one pipeline; each script
        checks the queue's trim watermark and reads atomically."""
        positions, tolerant = decode(since)
        targets = await self._targets(where)
        scan = limit if where is None else max(limit, SCAN)
        calls: list[tuple[str, str, list[Any]]] = []
        for q, floor in targets:
            start = max(positions.get(q, _ORIGIN), floor or _ORIGIN)
            calls.append(("events", q, [sid(start), "1" if tolerant else "", scan,
                                        (where and where.job_id) or "",
                                        (where and where.tenant) or ""]))  # fmt: skip
        results = await self._b._pipeline(calls)
        trimmed = {q: parse_sid(r[1]) for (q, _), r in zip(targets, results, strict=True)
                   if r[0] == "TRIMMED"}  # fmt: skip
        if trimmed:
            resume = dict(positions)
            for q, cut in trimmed.items():
                resume[q] = max(resume.get(q, _ORIGIN), cut)
            raise EventsTrimmed(since, encode(resume), f" (queues {', '.join(sorted(trimmed))})")
        return self._merge(positions, targets, results, limit)

    def _merge(
        self, positions: dict[str, Position], targets: Sequence[tuple[str, Position | None]],
        results: Sequence[list[Any]], limit: int,
    ) -> EventPage:  # fmt: skip
        """Merge the queues' entries by (stream id, queue). A queue scanned only part way
        bounds the merge: nothing after its scan position can be delivered yet, as its next
        entries may sort before."""
        entries: list[tuple[tuple[int, int, str], dict[str, str]]] = []
        ends: dict[str, Position] = {}
        horizon: tuple[int, int, str] | None = None
        for (q, _), res in zip(targets, results, strict=True):
            end = ends[q] = parse_sid(res[1])
            if int(res[0]) == 0 and (horizon is None or (*end, q) < horizon):
                horizon = (*end, q)
            for k in range(2, len(res), 2):
                flat = res[k + 1]
                entries.append(
                    ((*parse_sid(res[k]), q), dict(zip(flat[::2], flat[1::2], strict=True)))
                )
        entries.sort(key=lambda e: e[0])
        if horizon is not None:
            entries = [e for e in entries if e[0] <= horizon]
        more = horizon is not None
        stop = horizon
        if len(entries) > limit:
            entries, more = entries[:limit], True
            stop = entries[-1][0]
        cur = dict(positions)
        segs = {q: _segment(q, p) for q, p in cur.items() if p != _ORIGIN}
        order = sorted(set(cur) | set(ends))
        events: list[Event] = []
        for (ms, seq, q), f in entries:
            cur[q] = (ms, seq)
            segs[q] = _segment(q, (ms, seq))
            events.append(Event(
                "r" + "".join(segs[x] for x in order if x in segs), _TYPES[f["e"]], f.get("j"),
                q, f.get("t"), f.get("n"), ms / 1000.0, orjson.loads(f["d"]) if "d" in f else {},
            ))  # fmt: skip
        # Scanned entries that did not match the filter are consumed too, up to where the
        # page stops, so a rarely matching filter does not rescan (or fall behind a trim).
        for q, end in ends.items():
            if (stop is None or (*end, q) <= stop) and end > cur.get(q, _ORIGIN):
                cur[q] = end
        return EventPage(events, encode(cur), more)

    async def head(self) -> str:
        """See `Backend.last_event_cursor`: each queue's newest (or newest trimmed) id."""
        queues = await self._b._queues()
        pipe = self._b._client().pipeline(transaction=False)
        for q in queues:
            pipe.xrevrange(self._b.key(q, "events"), count=1)
            pipe.get(self._b.key(q, "evcut"))
        out = await pipe.execute()
        positions: dict[str, Position] = {}
        for i, q in enumerate(queues):
            last, cut = out[2 * i], out[2 * i + 1]
            pos = max(parse_sid(last[0][0]) if last else _ORIGIN,
                      parse_sid(cut) if cut else _ORIGIN)  # fmt: skip
            positions[q] = pos
        return encode(positions)

    async def trim(self, rule: EventRetention) -> int:
        """See `Backend.trim_events`: one ``trim`` script per queue stream, atomic with its
        watermark. Never reads the entries it deletes once the queue has marks (see trim.lua)."""
        if rule.max_count is None and rule.max_age is None:
            return 0
        count = "" if rule.max_count is None else rule.max_count
        age = "" if rule.max_age is None else repr(float(rule.max_age))
        calls = [("trim", q, [count, age, TRIM_READ]) for q in await self._b._queues()]
        return sum(int(n) for n in await self._b._pipeline(calls))


__all__ = ["EventLog", "decode", "encode"]
