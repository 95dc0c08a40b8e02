"""The dashboard's event stream (``/events``): cookie-authenticated ticks, confined to the
session's tenant."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.dashboard.conftest import Store, http_login


def _ticks(client: httpx.Client, act: Callable[[], str]) -> list[dict[str, Any]]:
    """Open the stream, run ``act`` once it is ready (it returns a job id), and return the
    ticks received until one names that job (the read times out after 15 s of silence)."""
    ticks: list[dict[str, Any]] = []
    wanted = None
    with client.stream("GET", "/events", timeout=httpx.Timeout(15.0)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "ready":
                    wanted = act()
            elif line.startswith("data:") and event == "tick":
                ticks.append(json.loads(line.split(":", 1)[1]))
                if wanted in ticks[-1]["jobs"]:
                    return ticks
    raise AssertionError(f"the stream ended before a tick named {wanted}: {ticks}")


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
