"""``GET /v1/events`` over real HTTP: a job's events arrive, a stream resumes after a
disconnect with nothing missed and nothing twice, tenants never see each other's events,
keep-alives flow on an idle stream, bad cursors are JSON errors, and streams end promptly when
the client leaves or the server stops."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import Client, Conveyor, EventRetention
from conveyor.errors import AuthError
from conveyor.server import ServerSettings
from conveyor.server.routes import events as events_route
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer
from tests.server.sse import messages, take_events

Serve = Callable[..., ApiServer]


async def submit(http: Any, task: str = "echo", **payload: Any) -> str:
    r = await http.post("/v1/jobs", json={"task": task, "payload": payload})
    assert r.status_code == 202, r.text
    return str(r.json()["job"]["id"])


async def test_the_events_of_a_job_arrive_as_it_runs(serve: Serve, keys: Any) -> None:
    # Given a server with a worker and a tenant's stream open
    srv = serve(worker={"concurrency": 2})
    key = await keys(tenant="acme")
    async with client(srv, key) as http, http.stream("GET", "/v1/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = messages(r)
        # When a job is submitted and runs
        job_id = await submit(http, value=7)
        # Then its enqueued, started and completed events arrive, each with its cursor as id
        seen = []
        async with asyncio.timeout(10):
            async for m in stream:
                if m.event is None:
                    continue
                assert m.data["job_id"] == job_id and m.data["tenant"] == "acme"
                assert m.id == m.data["cursor"] and m.event == m.data["type"]
                seen.append(m.event)
                if m.event == "completed":
                    break
        assert seen == ["enqueued", "started", "completed"]


async def test_a_resumed_stream_misses_nothing_and_repeats_nothing(
    serve: Serve, keys: Any, store: Conveyor
) -> None:
    # Given a stream that saw the events of three jobs, then was cut
    srv = serve()
    key = await keys(tenant="acme")
    async with client(srv, key) as http:
        async with http.stream("GET", "/v1/events") as r:
            stream = messages(r)
            first = [await submit(http, value=i) for i in range(3)]
            got = await take_events(stream, 3)
        assert [m.data["job_id"] for m in got] == first
        last_id = got[-1].id
        # When more jobs are submitted while it is away
        missed = [(await store.enqueue("echo", {"value": i}, tenant="acme")).id
                  for i in range(4)]  # fmt: skip
        # Then a reconnect with Last-Event-ID gets exactly those, then live ones
        headers = {"Last-Event-ID": last_id}
        async with http.stream("GET", "/v1/events", headers=headers) as r:
            stream = messages(r)
            again = await take_events(stream, 4)
            assert [m.data["job_id"] for m in again] == missed
            live = await submit(http, value="live")
            (m,) = await take_events(stream, 1)
            assert m.data["job_id"] == live
        # And ?since= resumes the same way
        async with http.stream("GET", "/v1/events", params={"since": last_id}) as r:
            got = await take_events(messages(r), 5)
            assert [m.data["job_id"] for m in got] == [*missed, live]


async def test_a_tenant_never_sees_another_tenants_events(
    serve: Serve, keys: Any, store: Conveyor
) -> None:
    # Given jobs of two tenants, and their batches
    srv = serve()
    acme, globex, admin = (
        await keys(tenant="acme"),
        await keys(tenant="globex"),
        await keys(admin=True),
    )
    other = await store.enqueue("echo", {"value": 1}, tenant="globex")
    other_batch = await store.enqueue_many([("echo", {"value": 2})], tenant="globex")
    async with client(srv, acme) as a, client(srv, globex) as g, client(srv, admin) as adm:
        # When acme asks for globex's tenant, then it is refused
        r = await a.get("/v1/events", params={"tenant": "globex", "follow": "false"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        # When acme follows the log
        async with (
            a.stream("GET", "/v1/events") as ra,
            adm.stream("GET", "/v1/events") as rall,
        ):
            mine_stream, all_stream = messages(ra), messages(rall)
            theirs = await submit(g, value="g")
            mine = await submit(a, value="a")
            # Then acme sees only its own job; the admin sees both, in order
            (m,) = await take_events(mine_stream, 1)
            assert m.data["job_id"] == mine and m.data["tenant"] == "acme"
            both = await take_events(all_stream, 2)
            assert [e.data["job_id"] for e in both] == [theirs, mine]
        # And another tenant's job or batch answers 404, exactly like a missing one
        for params in ({"job": other.id}, {"batch": other_batch.id}, {"job": "missing"},
                       {"batch": "missing"}):  # fmt: skip
            r = await a.get("/v1/events", params=params)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", params
    # And without a key the stream is refused
    async with client(srv) as anon:
        r = await anon.get("/v1/events")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_job_and_batch_filters_keep_to_their_jobs(
    serve: Serve, keys: Any, store: Conveyor
) -> None:
    # Given a tenant's batch and a single job, both with events in the log
    srv = serve()
    key = await keys(tenant="acme")
    batch = await store.enqueue_many([("echo", {"value": i}) for i in range(3)], tenant="acme")
    single = await store.enqueue("echo", {"value": "x"}, tenant="acme")
    async with client(srv, key) as http:
        # When the log is read from its start, filtered by the batch, then by the job
        params = {"since": "0", "follow": "false"}
        async with http.stream("GET", "/v1/events", params={**params, "batch": batch.id}) as r:
            by_batch = [m.data["job_id"] async for m in messages(r) if m.event]
        async with http.stream("GET", "/v1/events", params={**params, "job": single.id}) as r:
            by_job = [m.data["job_id"] async for m in messages(r) if m.event]
    # Then each sees only its own jobs' events (and follow=false ends the stream)
    assert by_batch == list(batch.ids)
    assert by_job == [single.id]


async def test_an_idle_stream_gets_keep_alives(serve: Serve, keys: Any, tmp_path: Any) -> None:
    # Given a server with a short keep-alive interval
    srv = serve(ServerSettings(sse_keepalive=0.2, upload_dir=tmp_path / "u"))
    key = await keys(tenant="acme")
    async with client(srv, key) as http, http.stream("GET", "/v1/events") as r:
        # When nothing happens, Then comment lines keep the connection alive
        async with asyncio.timeout(5):
            pings = 0
            async for m in messages(r):
                assert m.event is None
                pings += bool(m.comments)
                if pings == 2:
                    break


async def test_bad_cursors_are_json_errors(serve: Serve, keys: Any, store: Conveyor) -> None:
    # Given a server and a tenant key
    srv = serve()
    key = await keys(tenant="acme")
    async with client(srv, key) as http:
        # When the cursor is garbage (or a number no cursor can hold), Then 422 naming it
        for bad in ("not-a-cursor", "9" * 60, "r~q~zzzzzzzzzzzzzz~zz", "-1", "\u00e9t\u00e9"):
            r = await http.get("/v1/events", headers={"Last-Event-ID": bad.encode()})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["code"] == "invalid" and r.json()["error"]["field"] == "since"
        r = await http.get("/v1/events", params={"since": "x" * 9000})
        assert r.status_code == 422 and "error" in r.json()
        # When the cursor's events were trimmed by retention, Then 409 with the resume cursor
        await store.enqueue("echo", {"value": 1}, tenant="acme")
        await store.backend.trim_events(EventRetention(max_count=0, max_age=None))
        r = await http.get("/v1/events", params={"since": "0"})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "events_trimmed" and err["resume"]
        # And reading from the resume cursor works
        resume = err["resume"]
        r = await http.get("/v1/events", params={"since": resume, "follow": "false"})
        assert r.status_code == 200


async def test_streams_end_when_the_client_leaves(serve: Serve, keys: Any) -> None:
    # Given two open streams
    srv = serve()
    key = await keys(tenant="acme")
    hub = srv.api.state.event_hub
    async with client(srv, key) as http:
        for _ in range(2):
            async with http.stream("GET", "/v1/events") as r:
                assert r.status_code == 200
                await eventually(lambda: hub.subscribers >= 1, what="the stream subscribed")
        # When the clients disconnect, Then the server lets go of them and stops watching
        await eventually(lambda: hub.subscribers == 0 and not hub.running,
                         what="the streams and the hub ended")  # fmt: skip


async def test_streams_end_promptly_when_the_server_stops(serve: Serve, keys: Any) -> None:
    # Given an open, idle stream
    srv = serve()
    key = await keys(tenant="acme")
    async with client(srv, key) as http, http.stream("GET", "/v1/events") as r:
        assert r.status_code == 200
        await eventually(lambda: srv.api.state.event_hub.running, what="the hub watching")
        # When the server stops
        started = time.monotonic()
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        # Then the stream ends (well before uvicorn's 5 s graceful timeout)
        async with asyncio.timeout(4):
            async for _ in messages(r):
                pass
        await asyncio.to_thread(stopper.join, 10)
        assert time.monotonic() - started < 4


async def test_streams_beyond_the_servers_cap_are_503_until_one_ends(
    serve: Serve, keys: Any, tmp_path: Any
) -> None:
    # Given a server that keeps at most one event stream open, and one stream open
    srv = serve(ServerSettings(upload_dir=tmp_path / "uploads", max_streams=1))
    hub = srv.api.state.event_hub
    key = await keys(admin=True)
    async with client(srv, key) as http:
        async with http.stream("GET", "/v1/events") as first:
            assert first.status_code == 200
            await eventually(lambda: hub.subscribers == 1, what="the first stream")
            # When another stream is asked for
            r = await http.get("/v1/events")
            # Then it is refused as a temporary condition, naming the cap
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "too_many_streams"
            assert "1" in r.json()["error"]["message"] and r.headers["Retry-After"]
        # And once the first stream ended, a new one is served
        await eventually(lambda: hub.subscribers == 0, what="the first stream to end")
        r = await http.get("/v1/events", params={"follow": "false"})
        assert r.status_code == 200


async def test_an_open_stream_ends_once_its_key_is_revoked(
    serve: Serve, store: Conveyor, tmp_path: Any
) -> None:
    # Given a tenant's open stream (key_cache_ttl 0: the key is read again before each read;
    # the default only delays the end)
    srv = serve(ServerSettings(upload_dir=tmp_path / "uploads", key_cache_ttl=0.0))
    record, key = await store.api_keys.create(tenant="acme")
    async with client(srv, key) as http, http.stream("GET", "/v1/events") as r:
        assert r.status_code == 200
        await eventually(lambda: srv.api.state.event_hub.subscribers == 1, what="the stream")
        # When the key is revoked, and then one of its tenant's jobs is enqueued
        await store.api_keys.revoke(record.id)
        job = await store.enqueue("echo", {}, tenant="acme")
        # Then the stream ends with an unauthorized error instead of sending the job's events
        seen = [m async for m in messages(r) if m.event is not None]
    assert [m.event for m in seen] == ["error"], [m.data for m in seen]
    assert seen[0].data["error"]["code"] == "unauthorized"
    assert all(job.id not in str(m.data) for m in seen)


async def test_a_key_revoked_while_the_stream_reads_gets_none_of_that_read(
    serve: Serve, store: Conveyor, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tenant's open stream whose next read is raced by a revocation: the key is revoked
    # and a job of its tenant enqueued, through the server's own Conveyor, just as the read starts
    srv = serve(ServerSettings(upload_dir=tmp_path / "uploads", key_cache_ttl=0.0))
    record, key = await store.api_keys.create(tenant="acme")
    armed = threading.Event()
    raced: list[str] = []
    real_read = events_route._read

    async def read_raced_by_a_revocation(request: Any, cursor: str, where: Any) -> Any:
        if armed.is_set() and not raced:
            app = events_route.conveyor_of(request)
            await app.api_keys.revoke(record.id)
            raced.append((await app.enqueue("echo", {}, tenant="acme")).id)
        return await real_read(request, cursor, where)

    monkeypatch.setattr(events_route, "_read", read_raced_by_a_revocation)
    async with client(srv, key) as http, http.stream("GET", "/v1/events") as r:
        assert r.status_code == 200
        await eventually(lambda: srv.api.state.event_hub.subscribers == 1, what="the stream")
        armed.set()
        # When another tenant's job wakes the stream for its next read
        await store.enqueue("echo", {}, tenant="other")
        # Then the stream ends with an unauthorized error: the job enqueued after the
        # revocation is not sent although the read returned it
        seen = [m async for m in messages(r) if m.event is not None]
    assert raced, "the read was not raced"
    assert [m.event for m in seen] == ["error"], [m.data for m in seen]
    assert seen[0].data["error"]["code"] == "unauthorized"


async def test_the_client_raises_an_auth_error_once_its_key_is_revoked(
    serve: Serve, store: Conveyor, tmp_path: Any
) -> None:
    # Given a client following the events of a tenant whose key is then revoked
    srv = serve(ServerSettings(upload_dir=tmp_path / "uploads", key_cache_ttl=0.0))
    record, key = await store.api_keys.create(tenant="acme")
    async with Client(srv.url, key) as c:
        events = c.events(since="oldest")
        await c.enqueue("echo", {"value": 1})
        async with asyncio.timeout(10):
            await anext(events)
        await store.api_keys.revoke(record.id)
        await store.enqueue("echo", {}, tenant="acme")
        # Then the next read raises AuthError (not a retryable outage)
        with pytest.raises(AuthError):
            async with asyncio.timeout(10):
                await anext(events)
