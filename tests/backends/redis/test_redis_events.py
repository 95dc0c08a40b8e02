"""Redis-only checks of the event log: cursor text, the trim watermark and marks, XADD never
trimming, and reading across the slots of a Redis Cluster."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from redis import asyncio as aioredis

from conveyor import Conveyor, Event, EventRetention, EventsTrimmed
from conveyor.backends.redis.events import decode, encode
from tests.servers import RedisCluster, RedisServer


@pytest.fixture
async def app(server: RedisServer, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    prefix = re.sub(r"\W", "", request.node.name)[-40:]
    a = Conveyor(f"{server.url}?prefix=e{prefix}")
    yield a
    await a.close()


async def _read(app: Conveyor, since: str = "0") -> list[Event]:
    return [e async for e in app.events(since=since, follow=False)]


def test_cursor_text_round_trips_and_stays_small() -> None:
    # Given positions in three queues (one at its start)
    positions = {"default": (1796219925110, 3), "emails:high": (1796219925111, 0), "x": (0, 0)}
    # When encoded
    text = encode(positions)
    # Then it is one short token per queue with a position, read back exactly
    assert text == "r~default~mx66ysfq~3~emails:high~mx66ysfr~"
    assert decode(text) == ({q: p for q, p in positions.items() if q != "x"}, False)
    assert decode("oldest") == ({}, True) and decode("0") == ({}, False)


def test_only_the_tracked_trim_deletes_events() -> None:
    # Given every Lua script and include
    lua = resources.files("conveyor.backends.redis").joinpath("lua")
    for path in [*lua.iterdir(), *lua.joinpath("includes").iterdir()]:
        if path.name.endswith(".lua") and path.name != "streams.lua":
            code = [line.split("--")[0] for line in path.read_text().splitlines()]
            text = "\n".join(code)
            # Then none but streams.lua's trim_stream (which records the cut) deletes events:
            # an untracked trim would be a silent gap for readers
            assert "MAXLEN" not in text and "XTRIM" not in text and "XDEL" not in text, path


async def test_producers_alone_keep_the_log_capped_and_tracked(
    app: Conveyor, server: RedisServer
) -> None:
    # Given a queue whose event log is past its cap plus slack (110,000) with no worker to trim it
    @app.task
    async def t(i: int) -> None: ...

    await t.enqueue(i=0)
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    key = f"{prefix}:{{default}}:events"
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    pipe = client.pipeline(transaction=False)
    for _ in range(110_000):
        pipe.xadd(key, {"e": "enqueued", "t": "t"})
    await pipe.execute()
    first = await client.xrange(key, count=1000)
    # When a producer enqueues
    await t.enqueue(i=1)
    # Then the enqueue trimmed the oldest events and recorded the cut: a reader from the
    # first event ever is told, not skipped ahead
    assert await client.xlen(key) == 110_002 - 1000
    assert await client.get(f"{prefix}:{{default}}:evcut") == first[-1][0]
    await client.aclose()
    with pytest.raises(EventsTrimmed):
        await _read(app, "0")


async def test_count_trim_cuts_at_a_mark_and_the_watermark_is_exact(app: Conveyor) -> None:
    # Given ten events, a trim that deletes nothing (it leaves a mark after the 10th), and
    # ten more events
    @app.task
    async def t(i: int) -> None: ...

    for i in range(10):
        await t.enqueue(i=i)
    rule = EventRetention(max_count=5, max_age=None)
    assert await app.backend.trim_events(EventRetention(max_count=100, max_age=None)) == 0
    for i in range(10, 20):
        await t.enqueue(i=i)
    log = await _read(app)
    # When the log is capped at 5
    removed = await app.backend.trim_events(rule)
    # Then it was cut at the mark: 10 gone, 10 kept (at least 5, never fewer), without
    # reading the deleted entries
    assert removed == 10
    assert await _read(app, "oldest") == log[10:]
    client = aioredis.Redis.from_url(app.backend.url.split("?")[0], decode_responses=True)
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    cut = await client.get(f"{prefix}:{{default}}:evcut")
    await client.aclose()
    # And the watermark is the 10th event exactly: its reader lost nothing, the 9th's did
    assert decode(log[9].cursor)[0]["default"] == tuple(int(x) for x in cut.split("-"))
    assert await _read(app, log[9].cursor) == log[10:]
    with pytest.raises(EventsTrimmed):
        await _read(app, log[8].cursor)


# -- Redis Cluster -----------------------------------------------------------------------------


async def test_the_log_of_queues_in_different_slots_is_read_exactly_once(
    redis_cluster: RedisCluster,
) -> None:
    # Given a 3-master cluster and events of six queues (spread over the masters' slots)
    # written interleaved
    app = Conveyor(redis_cluster.url + "?prefix=ec")
    queues = [f"q{i}" for i in range(6)]
    for q in queues:

        @app.task(name=f"t-{q}", queue=q)
        async def t(i: int) -> None: ...

    try:
        for _ in range(5):
            await app.enqueue_many([(f"t-{q}", {"i": i}) for i in range(2) for q in queues])
        log = await _read(app)
        assert len(log) == 60 and len({e.job_id for e in log}) == 60
        # When a reader resumes from every event's cursor
        for i, e in enumerate(log):
            # Then it gets exactly the rest of the log
            assert await _read(app, e.cursor) == log[i + 1 :], f"after event {i}"
        # And a queue filter reads one slot's stream only, and trimming is reported there
        assert [e.job_id async for e in app.events(since="0", follow=False, queue="q3")] == [
            e.job_id for e in log if e.queue == "q3"
        ]
        await app.backend.trim_events(EventRetention(max_count=1, max_age=None))
        with pytest.raises(EventsTrimmed, match="q0"):
            await _read(app, log[0].cursor)
    finally:
        await app.close()
