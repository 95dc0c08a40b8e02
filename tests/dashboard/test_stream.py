"""The dashboard's event stream (``/events``): cookie-authenticated ticks, confined to the
session's tenant."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import httpx

from conveyor.server.routes import events
from tests.dashboard.conftest import Store, http_login, stream_ticks


def _ticks(client: httpx.Client, act: Callable[[], str]) -> list[dict[str, Any]]:
    """Open the stream, run ``act`` once it is ready (it returns a job id), and return the
    ticks received until one names that job (the read times out after 15 s of silence)."""
    wanted: list[str] = []
    with client.stream("GET", "/events", timeout=httpx.Timeout(15.0)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        ticks, ended = stream_ticks(r, lambda: wanted.append(act()),
                                    until=lambda t: wanted[0] in t["jobs"])  # fmt: skip
    if ended:
        raise AssertionError(f"the stream ended before a tick named {wanted}: {ticks}")
    return ticks


def test_a_tenant_stream_ticks_for_its_own_jobs_only(dash: Any, store: Store) -> None:
    srv = dash()
    _, key = store.key("a")
    ids: dict[str, str] = {}

    def enqueue_both() -> str:
        # b's job first: had it leaked into a's stream, it would come in this tick or before
        ids["b"] = store.run(lambda app: app.enqueue("echo", {}, tenant="b", delay=3600)).id
        ids["a"] = store.run(lambda app: app.enqueue("echo", {}, tenant="a", delay=3600)).id
        return ids["a"]

    # Given tenant a's open stream, When jobs of b and then a are enqueued
    with http_login(srv, key) as c:
        ticks = _ticks(c, enqueue_both)
    # Then a's stream named a's job and never b's
    assert all(ids["b"] not in t["jobs"] for t in ticks)


def test_an_admin_stream_ticks_for_every_tenant(dash: Any, store: Store) -> None:
    srv = dash()
    _, key = store.key(admin=True)

    def enqueue() -> str:
        return store.run(lambda app: app.enqueue("echo", {}, tenant="x", delay=3600)).id

    with http_login(srv, key) as c:
        ticks = _ticks(c, enqueue)
    assert ticks[-1]["n"] >= 1


def test_the_stream_needs_a_session(dash: Any) -> None:
    srv = dash()
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/events").status_code == 303  # to the login form


def test_an_open_stream_ends_once_its_key_is_revoked(dash: Any, store: Store) -> None:
    # Given tenant a's open stream (key_cache_ttl 0: the key is read again at each check; the
    # default 2 s only delays the end)
    srv = dash(key_cache_ttl=0.0)
    key_id, key = store.key("a")
    jobs: list[str] = []

    def revoke_then_change() -> None:
        # When the key is revoked, and then one of a's jobs changes
        store.run(lambda app: app.api_keys.revoke(key_id))
        jobs.append(store.run(lambda app: app.enqueue("echo", {}, tenant="a", delay=3600)).id)

    with http_login(srv, key) as c, c.stream("GET", "/events", timeout=15.0) as r:
        assert r.status_code == 200
        ticks, _ = stream_ticks(r, revoke_then_change, until=lambda t: jobs[0] in t["jobs"])
    job = jobs[0] if jobs else None
    # Then the stream ended instead of telling the revoked key about the job
    assert job is not None and all(job not in t["jobs"] for t in ticks), ticks


def test_a_key_revoked_while_the_stream_reads_gets_no_tick_of_that_read(
    dash: Any, store: Store, monkeypatch: Any
) -> None:
    # Given tenant a's open stream whose next read is raced by a revocation: the key is revoked
    # and a job of a enqueued, through the server's own Conveyor, just as the read starts
    srv = dash(key_cache_ttl=0.0)
    key_id, key = store.key("a")
    backend = srv.conveyor.backend
    real_read = backend.read_events
    armed = threading.Event()
    raced: list[str] = []

    async def read_raced_by_a_revocation(*args: Any, **kwargs: Any) -> Any:
        if armed.is_set() and not raced:
            await srv.conveyor.api_keys.revoke(key_id)
            job = await srv.conveyor.enqueue("echo", {}, tenant="a", delay=3600)
            raced.append(job.id)
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(backend, "read_events", read_raced_by_a_revocation)

    def wake() -> None:
        # When another tenant's job wakes the stream for its next read
        armed.set()
        store.run(lambda app: app.enqueue("echo", {}, tenant="b", delay=3600))

    with http_login(srv, key) as c, c.stream("GET", "/events", timeout=15.0) as r:
        assert r.status_code == 200
        ticks, _ = stream_ticks(r, wake)
    # Then the stream ended without a tick naming the job enqueued after the revocation
    assert raced, "the read was not raced"
    assert all(raced[0] not in t["jobs"] for t in ticks), ticks


def test_a_big_batch_s_link_gets_no_other_job_ids(
    dash: Any, store: Store, monkeypatch: Any
) -> None:
    # Given a batch of tenant a larger than MAX_BATCH_JOBS (lowered: the server runs in this
    # process), whose ids the stream therefore does not read, and a link to it
    monkeypatch.setattr(events, "MAX_BATCH_JOBS", 1000)
    srv = dash()
    _, key = store.key("a")
    jobs = [{"task": "echo", "payload": {}}] * 1001
    batch = store.run(lambda app: app.enqueue_many(jobs, tenant="a", delay=3600)).id
    with httpx.Client(base_url=srv.url, timeout=15.0) as c:
        made = c.get(f"/v1/batches/{batch}/link", headers={"Authorization": f"Bearer {key}"})
        token = re.search(r"token=([^&]+)", made.json()["path"])[1]  # type: ignore[index]
        # When another job of a, outside the batch, is enqueued while the link's stream is open
        with c.stream("GET", f"/events?batch={batch}&token={token}") as r:
            assert r.status_code == 200
            ticks, _ = stream_ticks(
                r, lambda: store.run(lambda app: app.enqueue("echo", {}, tenant="a", delay=3600)),
                until=lambda t: True,
            )  # fmt: skip
    # Then the stream still ticks (the page refreshes), naming no job and no count of a's events
    assert (ticks[0] if ticks else None) == {"n": None, "jobs": []}
