"""`conveyor.Client` against a real uvicorn: the producer API's calls and results over HTTP,
the server's errors as conveyor's exceptions, the event stream, and the sync facade."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import (
    AuthError,
    BackendUnavailable,
    Client,
    Conveyor,
    EventsTrimmed,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobState,
    JobStateError,
    QueueFull,
    RemoteError,
    UnknownTask,
    ValidationError,
)
from conveyor.client_errors import error_of
from tests.server.harness import ApiServer

Serve = Callable[..., ApiServer]


async def test_a_job_is_submitted_followed_and_its_result_returned(serve: Serve, keys: Any) -> None:
    # Given a server with a worker and a tenant's client
    srv = serve(worker={"concurrency": 2})
    async with Client(srv.url, await keys(tenant="acme")) as c:
        # When a job is enqueued and waited for
        job = await c.enqueue("echo", {"value": {"n": 1}}, priority="high", meta={"k": "v"})
        assert job.status is JobState.QUEUED and job.tenant == "acme" and job.created
        assert job.priority == 10 and job.meta == {"k": "v"}
        # Then its result comes back, and reading it shows it completed
        assert await c.wait(job.id, timeout=10) == {"n": 1}
        got = await c.get(job.id)
        assert got.status is JobState.COMPLETED and got.result == {"n": 1}
        # And the same idempotency key returns the same job, not a new one
        a = await c.enqueue("echo", {"value": 1}, idempotency_key="once")
        b = await c.enqueue("echo", {"value": 1}, idempotency_key="once")
        assert b.id == a.id and a.created and b.created is False
        # And a failing job raises JobFailed with its error
        boom = await c.enqueue("boom", {"message": "nope"})
        with pytest.raises(JobFailed, match="nope"):
            await c.wait(boom.id, timeout=10)


async def test_listing_steering_batches_and_stats(serve: Serve, keys: Any) -> None:
    # Given a server without a worker and a tenant's client
    srv = serve()
    async with Client(srv.url, await keys(tenant="acme")) as c:
        # When a batch is submitted
        batch = await c.enqueue_many([("echo", {"value": i}) for i in range(3)])
        assert batch.total == 3 and batch.created == 3 and len(batch.job_ids) == 3
        # Then it lists, by batch and across pages
        page = await c.list(batch=batch.id, limit=2)
        assert len(page.jobs) == 2 and page.next_cursor
        rest = await c.list(batch=batch.id, limit=2, cursor=page.next_cursor)
        assert {j.id for j in page.jobs + rest.jobs} == set(batch.job_ids)
        status = await c.batch(batch.id)
        assert status["total"] == 3 and status["counts"].get("queued") == 3
        # And a job is cancelled, then retried; cancelling a queued job twice is idempotent
        first = batch.job_ids[0]
        assert (await c.cancel(first)).status is JobState.CANCELLED
        assert (await c.cancel(first)).status is JobState.CANCELLED
        assert (await c.retry(first)).status is JobState.QUEUED
        with pytest.raises(JobStateError):
            await c.retry(first)  # queued: nothing to retry
        with pytest.raises(JobCancelled):
            await c.cancel(first)
            await c.wait(first, timeout=5)
        # And stats count the tenant's jobs per queue
        stats = await c.stats()
        assert stats["default"]["counts"]["queued"] == 2


async def test_server_errors_become_conveyors_exceptions(
    serve: Serve, keys: Any, store: Conveyor
) -> None:
    # Given another tenant's job
    srv = serve()
    theirs = await store.enqueue("echo", {"value": 1}, tenant="globex")
    async with Client(srv.url, await keys(tenant="acme")) as c:
        # Then another tenant's job is not found, exactly like a missing one
        for ident in (theirs.id, "missing", "a/b?c"):
            with pytest.raises(JobNotFound):
                await c.get(ident)
            with pytest.raises(JobNotFound):
                await c.cancel(ident)
        # And bad input names its problem
        with pytest.raises(UnknownTask):
            await c.enqueue("nope")
        with pytest.raises(ValidationError, match="priority"):
            await c.enqueue("echo", priority="whenever")
        with pytest.raises(ValidationError):
            await c.list(status="sleeping")
    # And a read-only key cannot write, a wrong key cannot read
    async with Client(srv.url, await keys(tenant="acme", read_only=True)) as ro:
        with pytest.raises(AuthError) as info:
            await ro.enqueue("echo")
        assert info.value.status == 403 and isinstance(info.value, PermissionError)
    async with Client(srv.url, "cvk_not_a_key") as bad:
        with pytest.raises(AuthError) as info:
            await bad.get("x")
        assert info.value.status == 401
    # And a server that cannot be reached is BackendUnavailable
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Client(f"http://127.0.0.1:{port}", "k", timeout=2) as gone:
        with pytest.raises(BackendUnavailable):
            await gone.get("x")


def test_error_answers_map_to_the_exception_tree() -> None:
    # Given the error bodies the server sends, Then each becomes the library's exception
    def body(code: str, **extra: Any) -> bytes:
        import orjson

        return orjson.dumps({"error": {"code": code, "message": f"m {code}", **extra}})

    full = error_of(429, body("queue_full", queue="q", limit=5), {}, "/v1/jobs")
    assert isinstance(full, QueueFull) and full.queue == "q" and full.limit == 5
    limited = error_of(429, body("rate_limited"), {"retry-after": "2"}, "/v1/jobs")
    assert isinstance(limited, RemoteError) and limited.retry_after == 2.0
    trimmed = error_of(409, body("events_trimmed", resume="7"), {}, "/v1/events")
    assert isinstance(trimmed, EventsTrimmed) and trimmed.resume == "7"
    assert isinstance(error_of(503, body("backend_unavailable"), {}, "/"), BackendUnavailable)
    state = error_of(409, body("conflict", state="completed"), {}, "/v1/jobs/j1")
    assert isinstance(state, JobStateError) and state.job_id == "j1" and state.state == "completed"
    odd = error_of(502, b"<html>bad gateway</html>", {}, "/v1/jobs")
    assert isinstance(odd, RemoteError) and "bad gateway" in str(odd)


async def test_events_follow_and_resume_from_a_cursor(
    serve: Serve, keys: Any, store: Conveyor
) -> None:
    # Given a tenant's client following the events of the log
    srv = serve(worker={"concurrency": 1})
    async with Client(srv.url, await keys(tenant="acme")) as c:
        first = await c.enqueue("echo", {"value": 1})
        events = c.events(since="oldest", job_id=first.id)
        # When the job runs, Then its events arrive in order, as `Event`s
        seen = []
        async with asyncio.timeout(10):
            async for ev in events:
                seen.append(ev)
                if ev.type.value == "completed":
                    break
        await events.aclose()
        assert [e.type.value for e in seen] == ["enqueued", "started", "completed"]
        # And reading from one event's cursor gives exactly the later ones
        after = [e async for e in c.events(since=seen[0].cursor, job_id=first.id, follow=False)]
        assert [e.cursor for e in after] == [e.cursor for e in seen[1:]]
        # And a trimmed cursor raises EventsTrimmed with where to resume
        from conveyor import EventRetention

        await store.backend.trim_events(EventRetention(max_count=0, max_age=None))
        with pytest.raises(EventsTrimmed) as info:
            async for _ in c.events(since="0", follow=False):
                pass
        assert info.value.resume


async def test_the_sync_facade_makes_the_same_calls(serve: Serve, keys: Any) -> None:
    # Given a server with a worker and a client used from sync code (a thread, no loop)
    srv = serve(worker={"concurrency": 1})
    key = await keys(tenant="acme")

    def sync_code() -> None:
        c = Client(srv.url, key)
        try:
            # When a job is enqueued and waited for through client.sync
            job = c.sync.enqueue("echo", {"value": "sync"})
            # Then the result and the job read back as with the async calls
            assert c.sync.wait(job.id, timeout=10) == "sync"
            assert c.sync.get(job.id).status is JobState.COMPLETED
            with pytest.raises(JobNotFound):
                c.sync.get("missing")
        finally:
            c.sync.close()  # closes the client's connections and its loop

    await asyncio.to_thread(sync_code)


def test_without_httpx_the_import_error_names_the_extra() -> None:
    # Given a Python where httpx cannot be imported
    code = ("import sys; sys.modules['httpx'] = None\nimport conveyor\n"
            "try:\n    conveyor.Client\nexcept ImportError as e:\n    print(e)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then `import conveyor` works, and using Client says which extra to install
    assert "conveyor[client]" in out.stdout
