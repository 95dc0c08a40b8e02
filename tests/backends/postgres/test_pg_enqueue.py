"""The PostgreSQL enqueue statements: a bulk of jobs differing only in id and payload travels as
two arrays and the common fields once; every other bulk as one JSON document of jobs. Both store
the same rows."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest

from conveyor import Conveyor
from conveyor.backends.params import NewJob
from conveyor.job import new_id
from tests.backends.postgres.conftest import plain

# Every column a NewJob sets, compared between the two statements (not the id and its seq, nor
# the times taken from the clock).
_COLS = ("queue, task, payload, priority, status, max_attempts, max_stalls, timeout, lease, "
         "tenant, batch, workflow, parent, idempotency_key, meta, step, steps, flow, "
         "scheduled_for IS NOT NULL, enq_pack IS NOT NULL")  # fmt: skip


def _job(**kw: object) -> NewJob:
    base = NewJob(new_id(), "q", "t", '{"a": "\\" \\\\ é \\u0000x"}', 3, 4, 2, 12.5, 40.0)
    return replace(base, id=new_id(), **kw)  # type: ignore[arg-type]


async def _stored(pg_url: str, ids: list[str]) -> list[tuple[object, ...]]:
    schema = pg_url.rsplit("schema=", 1)[1]
    async with await psycopg.AsyncConnection.connect(plain(pg_url)) as c:
        cur = await c.execute(
            f"SELECT {_COLS} FROM {schema}.jobs WHERE id = ANY(%s) ORDER BY seq", (ids,)
        )
        return await cur.fetchall()


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"tenant": "acme", "batch": "b1", "workflow": "w1", "parent": "p1", "meta": '{"m": 1}',
         "step": "s", "steps": 3, "timeout": None},
        {"delay": 30.0, "tenant": "acme"},
    ],
    ids=["defaults", "every-field", "delayed"],
)  # fmt: skip
async def test_a_uniform_bulk_stores_what_the_general_statement_stores(
    pg_url: str, fields: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.backends.postgres import enqueue

    ran: list[str] = []
    real = enqueue._json
    monkeypatch.setattr(enqueue, "_json", lambda jobs: ran.append("general") or real(jobs))
    app = Conveyor(pg_url)
    await app.open()
    # Given a bulk of 3 jobs alike but for id and payload (the uniform statement), and the same
    # bulk with one job's payload different and another's priority (the general statement)
    uniform = [_job(**fields), _job(**fields, payload="[1]"), _job(**fields, payload="null")]
    general = [_job(**fields), _job(**fields, payload="[1]"), _job(**fields, payload="null")]
    general[2].priority += 1
    # When both are stored
    a = await app.backend.enqueue_jobs(uniform)
    assert ran == []  # the uniform statement
    b = await app.backend.enqueue_jobs(general)
    assert ran == ["general"]
    assert a.created == b.created == [True] * 3
    # Then every column matches, job for job (but the changed priority)
    rows_a = await _stored(pg_url, a.ids)
    rows_b = await _stored(pg_url, b.ids)
    assert [r[2] for r in rows_a] == [j.payload for j in uniform]
    assert rows_a[:2] == rows_b[:2]
    assert rows_a[2][:3] + rows_a[2][4:] == rows_b[2][:3] + rows_b[2][4:]
    # And the jobs' events are per job (stored packed when all are queued now: both bulks)
    log = [e async for e in app.events(since="0", follow=False)]
    assert [e.job_id for e in log] == [*a.ids, *b.ids]
    delayed = "delay" in fields
    assert {e.type.value for e in log} == {"scheduled" if delayed else "enqueued"}
    assert rows_a[0][-1] is rows_b[0][-1] is (not delayed)
    await app.close()


async def test_a_uniform_bulk_resent_stores_only_the_new_jobs(pg_url: str) -> None:
    # Given a bulk stored once (a spool's resend sends the same ids again)
    app = Conveyor(pg_url)
    await app.open()
    first = [_job(), _job()]
    await app.backend.enqueue_jobs(first)
    # When it is sent again with one more job
    again = await app.backend.enqueue_jobs([*first, _job()])
    # Then only the new job is created, and its event is the only new one
    assert again.created == [False, False, True]
    log = [e.job_id async for e in app.events(since="0", follow=False)]
    assert log == again.ids
    await app.close()


async def test_a_bulk_too_big_for_jsonb_takes_the_general_statement(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.backends.postgres import enqueue

    # Given a limit below the bulk's document (jsonb holds 256 MB; json text 1 GB)
    monkeypatch.setattr(enqueue, "_JSONB_MAX", 10)
    sent: list[str] = []
    real = enqueue._json
    monkeypatch.setattr(enqueue, "_json", lambda jobs: sent.append("general") or real(jobs))
    app = Conveyor(pg_url)
    await app.open()
    # When a uniform bulk is stored
    res = await app.backend.enqueue_jobs([_job(), _job(payload="[1]")])
    # Then it went as one JSON document of jobs, and was stored whole
    assert sent == ["general"] and res.created == [True, True]
    assert [r[2] for r in await _stored(pg_url, res.ids)] == [_job().payload, "[1]"]
    await app.close()


async def test_the_jsonb_limit_is_counted_in_bytes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.backends.postgres import enqueue

    # Given payloads of 3-byte characters, and a limit above their document's length in
    # characters but below it in bytes (a bulk of ~1 MB payloads of such text passed 256 MB
    # of jsonb while its length in characters was under 128 M)
    payloads = ['{"t": "' + "中" * 200 + '"}', '{"t": "' + "文" * 200 + '"}']
    jobs = [_job(payload=p) for p in payloads]
    chars = len(enqueue.orjson.dumps([[j.id for j in jobs], payloads]).decode())
    monkeypatch.setattr(enqueue, "_JSONB_MAX", chars + 100)
    sent: list[str] = []
    real = enqueue._json
    monkeypatch.setattr(enqueue, "_json", lambda jobs: sent.append("general") or real(jobs))
    app = Conveyor(pg_url)
    await app.open()
    # When they are stored
    res = await app.backend.enqueue_jobs(jobs)
    # Then the general statement took them, whole
    assert sent == ["general"]
    assert [r[2] for r in await _stored(pg_url, res.ids)] == payloads
    await app.close()


async def test_an_empty_enqueue_stores_nothing(pg_url: str) -> None:
    app = Conveyor(pg_url)
    await app.open()
    res = await app.backend.enqueue_jobs([])
    assert (res.ids, res.created) == ([], [])
    assert [e async for e in app.events(since="0", follow=False)] == []
    await app.close()
