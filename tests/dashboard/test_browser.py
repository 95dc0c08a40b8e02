"""The dashboard in a real headless Chromium over real HTTP: live batch progress, retry from
the list, bulk cancel with its confirmation, approval of an awaiting job, escaping, and no
console error on any page (CSP violations are console errors)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from conveyor import Conveyor, JobState
from conveyor.backends.base import EVENTS_OLDEST, EventFilter, EventType
from tests.conftest import eventually_sync
from tests.dashboard.conftest import Store, login

WORKER = {"concurrency": 4}


def _status(store: Store, job_id: str) -> JobState:
    async def read(app: Conveyor) -> JobState:
        return (await app.get(job_id)).status

    return store.run(read)


def _audits(store: Store, job_id: str) -> list[dict[str, Any]]:
    async def read(app: Conveyor) -> list[dict[str, Any]]:
        page = await app.backend.read_events(EVENTS_OLDEST, 100, EventFilter(job_id=job_id))
        return [e.data for e in page.events if e.type is EventType.AUDIT]

    return store.run(read)


def test_batch_page_reaches_100_percent_live_with_a_read_only_link(page: Any, dash: Any,
                                                                  store: Store) -> None:  # fmt: skip
    # Given a batch of jobs due in a moment, and a read-only link to its page made by a tenant key
    srv = dash(worker=WORKER)
    _, key = store.key("acme")
    items = [{"task": "step", "payload": {"i": i, "seconds": 0.1}} for i in range(12)]
    batch = store.run(lambda app: app.enqueue_many(items, tenant="acme", delay=1.5))
    import httpx

    r = httpx.get(f"{srv.url}/v1/batches/{batch.id}/link?noun=session&verb=enriched",
                   headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 200, r.text
    link = r.json()["url"]

    # When an end user opens it (no login) before the jobs start
    response = page.goto(link)
    assert response is not None and response.status == 200
    # It may be framed by the configured ancestors only, never with X-Frame-Options: DENY
    headers = response.headers
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert "x-frame-options" not in headers
    assert int(page.locator(".pct").get_attribute("data-percent")) < 100
    page.evaluate("window.__not_reloaded = true")

    # Then the page fills to 100% by itself, without a reload, in the end user's words
    expect(page.locator(".pct")).to_have_attribute("data-percent", "100", timeout=20_000)
    assert page.evaluate("window.__not_reloaded") is True
    assert page.locator("[data-count=completed]").inner_text() == "12"
    assert "All 12 sessions enriched." in page.locator(".summary").inner_text()
    # And a link holder sees no action and no cost
    assert page.get_by_role("button").count() == 0
    assert "cost" not in page.content().lower()


def test_retry_a_failed_job_from_the_list_then_see_it_complete(page: Any, dash: Any,
                                                               store: Store,
                                                               tmp_path: Path) -> None:  # fmt: skip
    # Given a job that failed (its marker file exists)
    srv = dash(worker=WORKER)
    key_id, key = store.key(admin=True)
    marker = tmp_path / "marker"
    marker.write_text("x")
    job = store.run(lambda app: app.enqueue("flip", {"marker": str(marker)}))
    eventually_sync(lambda: _status(store, job.id) is JobState.FAILED, what="the job failed")

    # When an admin retries it from the failed jobs' list, the cause fixed
    login(page, srv, key)
    page.goto(f"{srv.url}/jobs?status=failed")
    row = page.locator(f"tr[data-job='{job.id}']")
    assert "failed" in row.inner_text()
    marker.unlink()
    row.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r".*done=retry.*"))
    assert "Job queued again." in page.locator(".notice").inner_text()

    # Then its page shows it completed (live), and the audit log names the acting key
    page.goto(f"{srv.url}/jobs/{job.id}")
    page.locator("h1 .st-completed").wait_for(timeout=15_000)
    assert _status(store, job.id) is JobState.COMPLETED
    audits = _audits(store, job.id)
    assert audits == [{"action": "retry", "key": key_id, "via": "dashboard"}]


def test_bulk_cancel_by_filter_with_a_confirmation_showing_the_count(page: Any, dash: Any,
                                                                     store: Store) -> None:  # fmt: skip
    # Given 5 scheduled jobs of tenant acme and 2 of tenant other
    srv = dash()
    _, key = store.key(admin=True)

    async def setup(app: Conveyor) -> tuple[list[str], list[str]]:
        mine = [(await app.enqueue("echo", {}, tenant="acme", delay=3600)).id for _ in range(5)]
        other = [(await app.enqueue("echo", {}, tenant="other", delay=3600)).id for _ in range(2)]
        return mine, other

    mine, other = store.run(setup)

    # When an admin filters on acme's scheduled jobs and asks to cancel them all
    login(page, srv, key)
    page.goto(f"{srv.url}/jobs")
    page.get_by_label("Status").select_option("scheduled")
    page.get_by_label("Tenant").fill("acme")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*tenant=acme.*"))
    assert page.locator("tbody tr").count() == 5
    page.get_by_role("link", name="Cancel all…").click()

    # Then the confirmation shows the count, and confirming cancels exactly those
    assert page.locator("h1").inner_text() == "Cancel 5 jobs?"
    page.get_by_role("button", name="Yes, cancel them").click()
    page.wait_for_url(re.compile(r".*done=bulk_cancel.*"))
    assert "5 job(s) cancelled." in page.locator(".notice").inner_text()
    assert [_status(store, j) for j in mine] == [JobState.CANCELLED] * 5
    assert [_status(store, j) for j in other] == [JobState.SCHEDULED] * 2


def test_approve_an_awaiting_job_with_data(page: Any, dash: Any, store: Store) -> None:
    # Given a job awaiting a decision
    srv = dash(worker=WORKER)
    key_id, key = store.key(admin=True)
    job = store.run(lambda app: app.enqueue("approve", {"what": "the <b>draft</b>"}))
    eventually_sync(lambda: _status(store, job.id) is JobState.AWAITING, what="awaiting")

    # When an admin approves it from the awaiting page with a note
    login(page, srv, key)
    page.goto(f"{srv.url}/awaiting")
    card = page.locator(f"article[data-job='{job.id}']")
    assert "approve the <b>draft</b>?" in card.locator("pre").inner_text()
    card.get_by_label("Decision data").fill("ship it")
    card.get_by_role("button", name="Approve").click()
    page.wait_for_url(re.compile(r".*done=approve.*"))

    # Then the job runs again with the decision and completes
    eventually_sync(lambda: _status(store, job.id) is JobState.COMPLETED, what="completed")
    result = store.run(lambda app: app.get(job.id)).result
    assert result == {"decision": {"note": "ship it", "approved": True, "by": key_id}}


def test_a_script_in_a_payload_or_error_renders_as_text(page: Any, dash: Any,
                                                        store: Store) -> None:  # fmt: skip
    # Given jobs whose payload and error carry markup
    srv = dash(worker=WORKER)
    _, key = store.key(admin=True)
    evil = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    echo = store.run(lambda app: app.enqueue("echo", {"value": evil}))
    boom = store.run(lambda app: app.enqueue("boom", {"message": evil}))
    eventually_sync(lambda: _status(store, boom.id) is JobState.FAILED, what="boom failed")

    # When an admin opens the list and both jobs' pages
    login(page, srv, key)
    for path in ("/jobs", f"/jobs/{echo.id}", f"/jobs/{boom.id}"):
        page.goto(f"{srv.url}{path}")
        # Then the markup is text: no script ran, no element was injected
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#live script, #live img").count() == 0
    assert evil in page.locator(".error").inner_text()
    page.goto(f"{srv.url}/jobs/{echo.id}")
    assert evil in page.locator("pre.json").first.inner_text()


def test_no_console_errors_on_any_page(page: Any, dash: Any, store: Store) -> None:
    # Given a store with a batch, a failed job, an awaiting job and a worker
    srv = dash(worker=WORKER)
    _, key = store.key(admin=True)
    batch = store.run(lambda app: app.enqueue_many([{"task": "echo", "payload": {}}] * 3))
    failed = store.run(lambda app: app.enqueue("boom", {}))
    store.run(lambda app: app.enqueue("approve", {}))
    eventually_sync(lambda: _status(store, failed.id) is JobState.FAILED, what="failed")

    # When an admin visits every page (each opens its live stream or refresh)
    page.goto(f"{srv.url}/login")
    login(page, srv, key)
    for path in ("/jobs", f"/jobs/{failed.id}", "/awaiting", "/queues", "/workers", "/costs",
                 f"/batches/{batch.id}", "/jobs?status=failed", "/jobs/bulk?action=retry&status=failed"):  # fmt: skip
        response = page.goto(f"{srv.url}{path}")
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle") if path == "/queues" else None
    # Then nothing was logged to the console (the page fixture checks it at teardown too)
    page.console.expect_none()


def test_admin_pages_update_live_without_reload(page: Any, dash: Any, store: Store) -> None:
    # Given an admin on the page of a job awaiting a decision
    srv = dash(worker=WORKER)
    _, key = store.key(admin=True)
    job = store.run(lambda app: app.enqueue("approve", {}))
    eventually_sync(lambda: _status(store, job.id) is JobState.AWAITING, what="awaiting")
    login(page, srv, key)
    page.goto(f"{srv.url}/jobs/{job.id}")
    assert page.locator("h1 .st-awaiting").count() == 1
    page.evaluate("window.__not_reloaded = true")

    # When someone else resumes it through the API
    store.run(lambda app: app.resume(job.id, {"approved": True}))

    # Then the page shows it completed by itself, with its result, without a reload
    expect(page.locator("h1 .st-completed")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__not_reloaded") is True

    # And the jobs list shows a job enqueued after it was opened
    page.goto(f"{srv.url}/jobs")
    page.evaluate("window.__not_reloaded = true")
    new = store.run(lambda app: app.enqueue("echo", {"value": 1}, delay=3600))
    expect(page.locator(f"tr[data-job='{new.id}']")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__not_reloaded") is True


def test_a_job_enqueued_while_the_live_stream_connects_still_shows(page: Any, dash: Any,
                                                                    store: Store) -> None:  # fmt: skip
    # Given an admin, and a job enqueued after the jobs list was rendered but before the page's
    # live stream connected (the stream's request is held until the job is stored)
    srv = dash()
    _, key = store.key(admin=True)
    login(page, srv, key)
    raced: list[str] = []

    def hold(route: Any) -> None:
        if not raced:
            raced.append(store.run(lambda app: app.enqueue("echo", {"value": 1}, delay=3600)).id)
        route.continue_()

    page.route(re.compile(r"/events(\?|$)"), hold)

    # When the list is opened, and nothing else happens afterwards
    page.goto(f"{srv.url}/jobs")
    page.evaluate("window.__not_reloaded = true")

    # Then the list shows that job by itself, without a reload
    expect(page.locator("tr[data-job]")).to_have_count(1, timeout=10_000)
    assert page.locator(f"tr[data-job='{raced[0]}']").count() == 1
    assert page.evaluate("window.__not_reloaded") is True


UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(el => el.type !== 'hidden' && el.labels.length === 0 && !el.getAttribute('aria-label'))
  .map(el => el.name)"""


def test_pages_fit_a_phone_and_label_their_controls(page: Any, dash: Any, store: Store) -> None:
    # Given a store with jobs of every kind and an admin at phone width (390 px)
    srv = dash(worker=WORKER)
    _, key = store.key(admin=True)
    batch = store.run(lambda app: app.enqueue_many([{"task": "echo", "payload": {}}] * 3))
    failed = store.run(lambda app: app.enqueue("boom", {"message": "x" * 300}))
    waiting = store.run(lambda app: app.enqueue("approve", {}))
    eventually_sync(lambda: _status(store, waiting.id) is JobState.AWAITING, what="awaiting")
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, srv, key)
    for path in ("/jobs", f"/jobs/{failed.id}", "/awaiting", "/queues", "/workers", "/costs",
                 f"/batches/{batch.id}", "/jobs/bulk?action=retry&status=failed", "/login"):  # fmt: skip
        page.goto(f"{srv.url}{path}")
        # Then nothing overflows the screen sideways (wide tables scroll in their own box)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide"
        # And every form control has a label
        assert page.evaluate(UNLABELLED) == [], path


def test_a_refused_stream_is_opened_again_later(page: Any, dash: Any, store: Store) -> None:
    # Given a server that serves one event stream, already taken, and a batch link
    import httpx

    srv = dash(max_streams=1)
    hub = srv.api.state.event_hub
    _, key = store.key("acme")
    batch = store.run(lambda app: app.enqueue_many([{"task": "echo", "payload": {}}] * 2,
                                                   tenant="acme", delay=3600))  # fmt: skip
    with httpx.Client(base_url=srv.url, timeout=15.0) as c:
        link = c.get(f"/v1/batches/{batch.id}/link", headers={"Authorization": f"Bearer {key}"})
        path = link.json()["path"]
        with c.stream("GET", f"/events?{path.split('?', 1)[1]}&batch={batch.id}") as blocker:
            assert blocker.status_code == 200
            eventually_sync(lambda: hub.subscribers == 1, what="the blocking stream")
            # When the page opens and its stream is refused (503 too_many_streams)
            with page.expect_response(lambda r: "/events?" in r.url) as refused:
                page.goto(srv.url + path)
            assert refused.value.status == 503
        # Then once a stream is free again, the page opens its own (backing off meanwhile)
        eventually_sync(lambda: hub.subscribers == 0, what="the blocking stream ended")
        eventually_sync(lambda: hub.subscribers == 1, what="the page's stream reopened")
    # And it is live again: a change of the batch shows without a reload
    page.evaluate("window.__not_reloaded = true")
    store.run(lambda app: app.cancel(batch.ids[0]))
    expect(page.locator(".warn")).to_contain_text("1 item cancelled")
    assert page.evaluate("window.__not_reloaded") is True
    # The refused connects are the page's only console errors (closed before the server stops:
    # its stream would log the lost connection)
    page.close()
    assert page.console and all("503" in e for e in page.console), page.console
    page.console.clear()


def test_a_page_whose_session_ended_shows_the_login_form(page: Any, dash: Any,
                                                         store: Store) -> None:  # fmt: skip
    # Given a logged-in jobs list, live (key_cache_ttl 0: the key is read again at each check)
    srv = dash(key_cache_ttl=0.0)
    key_id, key = store.key(admin=True)
    # (and its refresh on the stream's connection done: one after the revocation would find
    # the session ended and reload before the stream's reconnect is refused)
    with page.expect_response(lambda r: "fragment=1" in r.url):
        login(page, srv, key)
    hub = srv.api.state.event_hub
    eventually_sync(lambda: hub.subscribers == 1, what="the page's stream")
    # When the key is revoked, and something changes
    store.run(lambda app: app.api_keys.revoke(key_id))
    store.run(lambda app: app.enqueue("echo", {}, delay=3600))
    # Then the page, its stream ended, reloads onto the login form
    page.wait_for_url(re.compile(r".*/login\?next=%2Fjobs$"))
    expect(page.get_by_label("API key")).to_be_visible()
    # (the browser logs the stream's one reconnect, answered by the login redirect)
    assert page.console == [
        'EventSource\'s response has a MIME type ("text/html") that is not "text/event-stream".'
        " Aborting the connection."
    ]
    page.console.clear()
