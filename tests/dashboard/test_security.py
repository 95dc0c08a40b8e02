"""The dashboard's security model over real HTTP: tenant isolation (also through crafted URLs
and forms), read-only keys, CSRF, the session cookie, batch links, headers, the audit trail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, JobState
from conveyor.apikeys import parse_key
from conveyor.backends.base import EVENTS_OLDEST, EventType
from tests.dashboard.conftest import Store, csrf_of, http_login, login, stream_ticks

# Isolation rests on the tenant every backend call is given: checked on both backends.
BOTH = pytest.mark.parametrize("dash_url", ["sqlite", "redis"], indirect=True)


def _status(store: Store, job_id: str) -> JobState:
    async def read(app: Conveyor) -> JobState:
        return (await app.get(job_id)).status

    return store.run(read)


@pytest.fixture
def two_tenants(store: Store) -> Iterator[dict[str, Any]]:
    """Tenant a's scheduled job and batch; keys of tenants a and b."""

    async def setup(app: Conveyor) -> dict[str, Any]:
        job = await app.enqueue("echo", {"value": "a's secret work"}, tenant="a", delay=3600)
        batch = await app.enqueue_many([{"task": "echo", "payload": {}}], tenant="a",
                                       delay=3600)  # fmt: skip
        return {"job": job.id, "batch": batch.id, "batch_job": batch.ids[0]}

    data = store.run(setup)
    data["a_key"] = store.key("a")[1]
    data["b_key"] = store.key("b")[1]
    yield data


@BOTH
def test_tenant_b_cannot_see_a_s_jobs_in_the_browser(page: Any, dash: Any, store: Store,
                                                     two_tenants: dict[str, Any]) -> None:  # fmt: skip
    # Given tenant b logged in
    srv = dash()
    login(page, srv, two_tenants["b_key"])
    # When it lists jobs, awaiting jobs and queues, then Then a's job shows nowhere
    for path in ("/jobs", "/awaiting", "/queues", "/jobs?status=scheduled"):
        page.goto(f"{srv.url}{path}")
        assert two_tenants["job"] not in page.content(), path
        assert "a's secret work" not in page.content()
    # And crafted URLs answer as for a job or batch that does not exist, or are refused
    for path, status in ((f"/jobs/{two_tenants['job']}", 404),
                         (f"/batches/{two_tenants['batch']}", 404),
                         ("/jobs?tenant=a", 403),
                         (f"/jobs?id={two_tenants['job']}", 200)):  # fmt: skip
        response = page.goto(f"{srv.url}{path}")
        assert response is not None and response.status == status, path
        assert "a's secret work" not in page.content()
        assert page.locator("tbody tr").count() == 0
    page.console.clear()  # the refused pages' 403/404 are logged by the browser, on purpose


@BOTH
def test_tenant_b_cannot_act_on_a_s_jobs_with_crafted_forms(dash: Any, store: Store,
                                                            two_tenants: dict[str, Any]) -> None:  # fmt: skip
    # Given tenant b's session and its own valid CSRF token
    srv = dash()
    with http_login(srv, two_tenants["b_key"]) as b:
        token = csrf_of(b.get("/jobs").text)
        a_job = two_tenants["job"]
        # When it posts cancel / retry / resume of a's job with its token: 404, nothing changes
        for action in ("cancel", "retry", "resume"):
            r = b.post(f"/jobs/{a_job}/{action}", data={"csrf": token, "decision": "approve"})
            assert r.status_code == 404, (action, r.text)
        # And a bulk cancel naming tenant a is refused; one by batch finds none of a's jobs
        r = b.post("/jobs/bulk", data={"csrf": token, "action": "cancel", "tenant": "a"})
        assert r.status_code == 403
        r = b.post("/jobs/bulk", data={"csrf": token, "action": "cancel",
                                       "batch": two_tenants["batch"]})  # fmt: skip
        assert r.status_code == 303 and "n=0" in r.headers["location"]
        # And its event stream cannot follow a's job or batch
        assert b.get(f"/events?job={a_job}").status_code == 404
        assert b.get(f"/events?batch={two_tenants['batch']}").status_code == 404
    assert _status(store, a_job) is JobState.SCHEDULED
    assert _status(store, two_tenants["batch_job"]) is JobState.SCHEDULED


def test_forms_without_the_session_s_csrf_token_are_refused(dash: Any, store: Store,
                                                           two_tenants: dict[str, Any]) -> None:  # fmt: skip
    # Given tenant a's own session
    srv = dash()
    a_job = two_tenants["job"]
    with http_login(srv, two_tenants["a_key"]) as a, http_login(srv, two_tenants["b_key"]) as b:
        b_token = csrf_of(b.get("/jobs").text)
        # When a form of its own job comes without a token, with another session's, or from
        # another origin with its own token
        own = csrf_of(a.get("/jobs").text)
        attempts = [({}, {}), ({"csrf": b_token}, {}), ({"csrf": "0" * 64}, {}),
                    ({"csrf": own}, {"Origin": "http://evil.example"})]  # fmt: skip
        for data, headers in attempts:
            r = a.post(f"/jobs/{a_job}/cancel", data=data, headers=headers)
            # Then each is refused before anything is done
            assert r.status_code == 403, data
        assert _status(store, a_job) is JobState.SCHEDULED
        # And with its token and its origin, the same form works
        r = a.post(f"/jobs/{a_job}/cancel", data={"csrf": own}, headers={"Origin": srv.url})
        assert r.status_code == 303
    assert _status(store, a_job) is JobState.CANCELLED


def test_a_read_only_key_sees_no_buttons_and_its_actions_are_refused(page: Any, dash: Any,
                                                                      store: Store) -> None:  # fmt: skip
    srv = dash()
    job = store.run(lambda app: app.enqueue("echo", {}, tenant="a", delay=3600))
    _, key = store.key("a", read_only=True)
    # Given a read-only session, When it opens the list and the job
    login(page, srv, key)
    for path in ("/jobs", f"/jobs/{job.id}"):
        page.goto(f"{srv.url}{path}")
        # Then no action button shows (only logging out, and filtering the list)
        shown = set(page.get_by_role("button").all_inner_texts())
        assert shown <= {"Log out", "Filter"}, path
        assert page.locator("form[method=post]").count() == 1  # the logout form
    # And the server refuses its actions even with a valid token
    with http_login(srv, key) as c:
        token = csrf_of(c.get("/jobs").text)
        assert c.post(f"/jobs/{job.id}/cancel", data={"csrf": token}).status_code == 403
        assert c.get("/jobs/bulk?action=cancel&status=scheduled").status_code == 403
    assert _status(store, job.id) is JobState.SCHEDULED


def test_session_cookie_flags_logout_and_revocation(dash: Any, store: Store) -> None:
    srv = dash()
    key_id, key = store.key(admin=True)
    with httpx.Client(base_url=srv.url) as c:
        form = c.get("/login")
        r = c.post(
            "/login", data={"key": key, "csrf": csrf_of(form.text), "next": "//evil.example"}
        )
        # The session cookie is HttpOnly, SameSite=Strict, holds no key, and the redirect stays
        assert r.status_code == 303 and r.headers["location"] == "/jobs"
        cookie = next(v for k, v in r.headers.multi_items()
                      if k == "set-cookie" and v.startswith("conveyor_session="))  # fmt: skip
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        parsed = parse_key(key)
        assert parsed is not None and parsed[1] not in cookie and key not in cookie
        assert c.get("/jobs").status_code == 200
        # Logout clears it
        r = c.post("/logout", data={"csrf": csrf_of(c.get("/jobs").text)})
        assert r.status_code == 303 and 'conveyor_session=""' in r.headers["set-cookie"]
        assert c.get("/jobs").status_code == 303
    # A session of a key revoked since then ends
    with httpx.Client(base_url=srv.url) as c:
        form = c.get("/login")
        c.post("/login", data={"key": key, "csrf": csrf_of(form.text)})
        assert c.get("/jobs").status_code == 200
        store.run(lambda app: app.api_keys.revoke(key_id))
        from tests.conftest import eventually_sync

        eventually_sync(lambda: c.get("/jobs").status_code == 303, what="session ended")
    # A wrong key is refused with the form again
    with httpx.Client(base_url=srv.url) as c:
        form = c.get("/login")
        r = c.post("/login", data={"key": "cvk_k_000000000000_" + "x" * 32,
                                   "csrf": csrf_of(form.text)})  # fmt: skip
        assert r.status_code == 401 and "not a valid API key" in r.text


def test_batch_links_read_one_batch_only(dash: Any, store: Store,
                                         two_tenants: dict[str, Any]) -> None:  # fmt: skip
    srv = dash()
    other = store.run(lambda app: app.enqueue_many([{"task": "echo", "payload": {}}],
                                                   tenant="a", delay=3600))  # fmt: skip
    auth = {"Authorization": f"Bearer {two_tenants['a_key']}"}
    with httpx.Client(base_url=srv.url) as c:
        made = c.get(f"/v1/batches/{two_tenants['batch']}/link", headers=auth).json()
        token = re.search(r"token=([^&]+)", made["path"])[1]  # type: ignore[index]
        # The link opens its batch's page, framable by the configured ancestors only
        r = c.get(made["path"])
        assert r.status_code == 200
        assert "frame-ancestors 'self'" in r.headers["content-security-policy"]
        assert "x-frame-options" not in r.headers
        # But not another batch, not with a changed token, and it is no session
        assert c.get(f"/batches/{other.id}?token={token}").status_code == 403
        head, sig = token.rsplit(".", 1)  # (not its last character: 2 of its bits are padding)
        changed = f"{head}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
        assert c.get(f"/batches/{two_tenants['batch']}?token={changed}").status_code == 403
        assert c.get(f"/events?batch={other.id}&token={token}").status_code == 403
        assert c.get("/jobs").status_code == 303
        # Tenant b cannot make a link to a's batch; every other page refuses framing
        r = c.get(f"/v1/batches/{two_tenants['batch']}/link",
                   headers={"Authorization": f"Bearer {two_tenants['b_key']}"})  # fmt: skip
        assert r.status_code == 404
        r = c.get("/login")
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_every_action_is_audited_with_the_acting_key(dash: Any, store: Store) -> None:
    srv = dash()
    key_id, key = store.key(admin=True)
    job = store.run(lambda app: app.enqueue("echo", {}, delay=3600))
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.delete(f"/v1/jobs/{job.id}").status_code == 200
        assert api.post("/v1/queues/default/pause").status_code == 200
    with http_login(srv, key) as c:
        token = csrf_of(c.get("/queues").text)
        assert c.post(f"/jobs/{job.id}/retry", data={"csrf": token}).status_code == 303
        assert c.post("/queues/default/resume", data={"csrf": token}).status_code == 303

    async def audits(app: Conveyor) -> list[dict[str, Any]]:
        page = await app.backend.read_events(EVENTS_OLDEST, 1000)
        return [e.data for e in page.events if e.type is EventType.AUDIT]

    assert store.run(audits) == [
        {"action": "cancel", "key": key_id, "via": "api"},
        {"action": "pause", "key": key_id, "via": "api"},
        {"action": "retry", "key": key_id, "via": "dashboard"},
        {"action": "resume_queue", "key": key_id, "via": "dashboard"},
    ]


def test_without_auth_the_login_form_continues_as_an_admin(dash: Any, store: Store) -> None:
    # Given a --no-auth server (local development)
    srv = dash(auth=False)
    with httpx.Client(base_url=srv.url) as c:
        # When the login form is sent without a key, Then the session is an admin's
        form = c.get("/login")
        assert 'name="key"' not in form.text and "Continue" in form.text
        r = c.post("/login", data={"csrf": csrf_of(form.text)})
        assert r.status_code == 303
        page = c.get("/workers")
        assert page.status_code == 200 and "no auth · admin" in page.text


def test_a_key_id_is_no_bearer_key_while_its_session_is_cached(dash: Any, store: Store) -> None:
    # Given an admin's dashboard session, just used (its key is cached by id for the session)
    # and the admin key's id, which is public (listings, logs, audit events a tenant reads)
    srv = dash(key_cache_ttl=60.0)
    admin_id, admin_key = store.key(admin=True)
    with http_login(srv, admin_key) as session:
        assert session.get("/jobs").status_code == 200
        # When someone sends a bearer "key" made of that id, as the session cache names it
        forged = {"Authorization": f"Bearer id:{admin_id}"}
        r = httpx.get(f"{srv.url}/v1/workers", headers=forged, timeout=10.0)
        # Then it is refused like any invalid key, not taken for the admin key
        assert r.status_code == 401, r.text
        # And the real key and the session still work
        r = httpx.get(f"{srv.url}/v1/workers", timeout=10.0,
                      headers={"Authorization": f"Bearer {admin_key}"})  # fmt: skip
        assert r.status_code == 200
        assert session.get("/workers").status_code == 200


def test_a_session_is_charged_its_key_s_request_rate_like_the_api(dash: Any,
                                                                  store: Store) -> None:  # fmt: skip
    # Given a server allowing each key one request (a burst of 1, refilled once in 1,000 s)
    srv = dash(rate_limit=0.001, rate_burst=1)
    _, key = store.key("a")
    with http_login(srv, key) as c:  # the login form itself is not charged
        # When the session asks for two pages in a row
        first, second = c.get("/jobs"), c.get("/jobs?status=failed")
        # Then the second is refused as the API would refuse that key's second request
        assert first.status_code == 200
        assert second.status_code == 429, second.status_code
        assert int(second.headers["retry-after"]) >= 1
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{srv.url}/v1/jobs", headers=auth, timeout=10.0).status_code == 429


def test_a_batch_link_cannot_follow_another_job_on_the_stream(dash: Any, store: Store,
                                                              two_tenants: dict[str, Any]) -> None:  # fmt: skip
    # Given a read-only link to a's batch, made by an admin (its reads span every tenant)
    srv = dash()
    _, admin_key = store.key(admin=True)
    other = store.run(lambda app: app.enqueue("echo", {}, tenant="b", delay=3600)).id
    auth = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=srv.url, timeout=10.0) as c:
        made = c.get(f"/v1/batches/{two_tenants['batch']}/link", headers=auth).json()
        token = re.search(r"token=([^&]+)", made["path"])[1]  # type: ignore[index]
        base = f"/events?batch={two_tenants['batch']}&token={token}"
        # When its holder asks the stream for a job outside the batch (here another tenant's)
        # Then it is refused: the answer must not tell whether that job exists
        for job in (other, "0" * 26):
            with c.stream("GET", f"{base}&job={job}") as r:
                assert r.status_code == 403, (job, r.status_code)


def test_a_batch_link_stops_working_once_its_key_is_revoked(dash: Any, store: Store,
                                                            two_tenants: dict[str, Any]) -> None:  # fmt: skip
    # Given a link to a's batch made by a key of a (key_cache_ttl 0: the key is read again at
    # each check; the default only delays the end), its page and its stream open
    srv = dash(key_cache_ttl=0.0)
    key_id, key = store.key("a")
    batch, job = two_tenants["batch"], two_tenants["batch_job"]
    with httpx.Client(base_url=srv.url, timeout=15.0) as c:
        made = c.get(f"/v1/batches/{batch}/link", headers={"Authorization": f"Bearer {key}"})
        path = made.json()["path"]
        assert c.get(path).status_code == 200
        token = re.search(r"token=([^&]+)", path)[1]  # type: ignore[index]

        def revoke_then_change() -> None:
            # When the key is revoked, and then a job of the batch changes
            store.run(lambda app: app.api_keys.revoke(key_id))
            store.run(lambda app: app.cancel(job))

        with c.stream("GET", f"/events?batch={batch}&token={token}") as r:
            assert r.status_code == 200
            ticks, _ = stream_ticks(r, revoke_then_change, until=lambda t: True)
        # Then the stream ended without telling the link's holder, and the page refuses it
        assert ticks == []
        r = c.get(path)
        assert r.status_code == 403 and "revoked" in r.text
