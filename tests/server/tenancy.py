"""The world of the tenant-isolation matrix (`tests/server/test_tenancy_matrix.py`): tenant A's
objects of every kind, tenant B's own few, the keys, and `Call`, one request of the matrix with
what its caller must get.

Tenant A owns: a queued job, a cancelled job, a completed job (submitted with an idempotency
key), a failed job, a batch (submitted with an idempotency key), an upload and its job (an
idempotency key too), and a queued job on a queue only A uses, of a task the served app does
not even know (so nothing but A's job names that queue). Every one of them has events. A's
payloads, results, error messages and file carry `SECRET`. Tenant B owns a queued, a completed
and a failed job, so that B's listings and streams have something to show, and shares with A
a batch made through the library (`enqueue_many` items of two tenants)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import httpx

from conveyor import Conveyor, Job, JobState
from tests.conftest import events_of, eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer

A, B = "tenant-acme", "tenant-globex"
PRIVATE_QUEUE = "acme-private-queue"
PRIVATE_TASK = "acme_private_task"
SECRET = "acme-secret-5f1d0c"
FILE = f"the file of {SECRET}".encode()
KEYS = {"job": "acme-job-key", "batch": "acme-batch-key", "upload": "acme-upload-key"}


class Expect(Enum):
    NOT_FOUND = "404, exactly like a missing object"
    FORBIDDEN = "403"
    CLEAN = "2xx without any of A's ids, names or data"


@dataclass(frozen=True)
class Call:
    """One request and what its caller must get (``status``: the 2xx of a `Expect.CLEAN`)."""

    method: str
    url: str
    expect: Expect = Expect.CLEAN
    status: int = 200
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] | None = None
    form: dict[str, str] | None = None
    upload: bytes | None = None
    shows: str | None = None  # an id of the caller's own that the answer must hold
    body: Any = None  # the exact JSON answer, when it is known
    echoes: tuple[str, ...] = ()  # A's names the caller itself sent, so may get back

    def request(self, http: httpx.AsyncClient) -> Any:
        files = None if self.upload is None else {"file": ("notes.txt", self.upload, "text/plain")}
        return http.request(self.method, self.url, params=self.params, json=self.json,
                            headers=self.headers, data=self.form, files=files)  # fmt: skip

    def renamed(self, names: dict[str, str]) -> Call:
        """This call with each of A's names replaced (the same request on missing objects)."""
        text = json.dumps([self.url, self.params, self.json, self.form])
        for old, new in names.items():
            text = text.replace(old, new)
        url, params, body, form = json.loads(text)
        return replace(self, url=url, params=params, json=body, form=form)

    def __str__(self) -> str:
        extra = {k: v for k, v in (("params", self.params), ("json", self.json),
                                   ("form", self.form)) if v}  # fmt: skip
        return f"{self.method} {self.url} {extra or ''}".strip()


@dataclass
class World:
    srv: ApiServer
    store: Conveyor
    key_a: str
    key_a_read_only: str
    key_b: str
    key_admin: str
    queued: str = ""
    cancelled: str = ""
    done: str = ""
    failed: str = ""
    private: str = ""
    batch: str = ""
    batch_jobs: list[str] = field(default_factory=list)
    mixed: str = ""  # a batch made through the library: one job of A, one of B
    mixed_jobs: list[str] = field(default_factory=list)
    upload: str = ""
    upload_job: str = ""
    upload_ref: dict[str, Any] = field(default_factory=dict)
    a_cursor: str = ""  # the next_cursor of A's first page of one job
    a_event: str = ""  # the cursor of A's first event
    awaiting: str = ""  # a job of A awaiting a decision (human in the loop)
    b_queued: str = ""
    b_done: str = ""
    b_failed: str = ""

    @property
    def a_jobs(self) -> list[str]:
        return [self.queued, self.cancelled, self.done, self.failed, self.private,
                *self.batch_jobs, self.upload_job, self.mixed_jobs[0], self.awaiting]  # fmt: skip

    @property
    def a_names(self) -> list[str]:
        """Everything of A that B must never read: ids, names, tenant, data."""
        return [*self.a_jobs, self.batch, self.upload, PRIVATE_QUEUE, PRIVATE_TASK, A, SECRET,
                *KEYS.values()]  # fmt: skip

    def missing_names(self) -> dict[str, str]:
        """A fresh name of the same shape for each of A's ids (objects that do not exist)."""
        fake = {i: secrets.token_hex(len(i) // 2) for i in [*self.a_jobs, self.batch]}
        return {**fake, self.upload: f"upl_{secrets.token_hex(16)}",
                PRIVATE_QUEUE: "no-such-queue-here"}  # fmt: skip


async def _submit(
    http: httpx.AsyncClient, task: str, key: str | None = None, meta: Any = None, **payload: Any
) -> str:
    headers = {"Idempotency-Key": key} if key else None
    body = {"task": task, "payload": payload, "meta": meta}
    r = await http.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["job"]["id"])


async def jobs_of(store: Conveyor, tenant: str) -> list[Job]:
    """Every job of ``tenant``, newest first."""
    jobs: list[Job] = []
    cursor = None
    while True:
        page = await store.list(tenant=tenant, limit=1000, cursor=cursor)
        jobs.extend(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return jobs


async def all_jobs(store: Conveyor, tenant: str) -> dict[str, tuple[str, int]]:
    """Every job of ``tenant``: id -> (status, attempt)."""
    return {j.id: (j.status.value, j.attempt) for j in await jobs_of(store, tenant)}


async def settled(store: Conveyor, tenant: str) -> list[Job]:
    """``tenant``'s jobs once none runs or waits on a served queue (only "default" is)."""

    async def still() -> list[Job] | None:
        jobs = await jobs_of(store, tenant)
        moving = [j for j in jobs if j.queue == "default" and not j.status.is_final
                  and j.status is not JobState.AWAITING]  # fmt: skip
        return None if moving else jobs

    jobs: list[Job] = await eventually(still, timeout=20, what=f"the jobs of {tenant} settled")
    return jobs


async def build_world(srv: ApiServer, store: Conveyor, make_key: Any) -> World:
    """Tenant A's objects and B's, through the API of ``srv`` (a worker serves "default")."""
    w = World(srv, store, await make_key(A), await make_key(A, read_only=True),
              await make_key(B), await make_key(admin=True))  # fmt: skip

    @store.task(queue=PRIVATE_QUEUE, name=PRIVATE_TASK)
    async def private(value: Any = None) -> Any:  # registered on the test's store only
        return value

    async with client(srv, w.key_a) as a, client(srv, w.key_b) as b:
        w.queued = await _submit(a, "hold", meta={"note": SECRET})
        w.cancelled = await _submit(a, "hold", meta={"note": SECRET})
        assert (await a.delete(f"/v1/jobs/{w.cancelled}")).status_code == 200
        w.done = await _submit(a, "echo", KEYS["job"], value=SECRET)
        w.failed = await _submit(a, "boom", message=SECRET)
        w.awaiting = await _submit(a, "approve", what=SECRET)
        items = [
            {"task": "echo", "payload": {"value": SECRET}},
            {"task": "hold", "meta": {"n": SECRET}},
        ]
        # (with a callback: the batch has a record, and takes jobs at /v1/batches/{id}/jobs)
        r = await a.post("/v1/jobs/batch", json={"jobs": items, "on_complete": "batch_done"},
                         headers={"Idempotency-Key": KEYS["batch"]})  # fmt: skip
        assert r.status_code == 202, r.text
        w.batch, w.batch_jobs = r.json()["batch"]["id"], r.json()["jobs"]
        r = await a.post("/v1/uploads", data={"task": "digest"}, headers={
            "Idempotency-Key": KEYS["upload"]}, files={"file": (f"{SECRET}.txt", FILE)})  # fmt: skip
        assert r.status_code == 202, r.text
        up = r.json()["upload"]
        w.upload, w.upload_job, w.upload_ref = up["id"], r.json()["job"]["id"], up["ref"]
        w.private = (await store.enqueue(PRIVATE_TASK, {"value": SECRET}, tenant=A)).id
        mixed = await store.enqueue_many([{"task": "hold", "tenant": A, "meta": {"n": SECRET}},
                                          {"task": "hold", "tenant": B}])  # fmt: skip
        w.mixed, w.mixed_jobs = mixed.id, mixed.ids
        r = await a.get("/v1/jobs", params={"limit": 1})
        w.a_cursor = r.json()["next_cursor"]
        w.a_event = (await events_of(store, w.queued))[0].cursor
        w.b_queued = await _submit(b, "hold")
        w.b_done = await _submit(b, "echo", value="b")
        w.b_failed = await _submit(b, "boom")
    await settled(store, A)
    await settled(store, B)
    return w


def leaked(text: str, names: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return [n for n in names if n in text and n not in allowed]


async def check(http: httpx.AsyncClient, call: Call, w: World) -> None:
    """Send ``call`` as B and assert what B got: a 404 whose body is a missing object's (but
    the id), a 403, or its 2xx holding none of A's names but those it sent itself."""
    r = await call.request(http)
    where = f"{call} -> {r.status_code} {r.text[:300]}"
    if call.expect is Expect.NOT_FOUND:
        names = w.missing_names()
        missing = await call.renamed(names).request(http)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", where
        answer = r.text
        for old, new in names.items():
            answer = answer.replace(old, new)
        assert answer == missing.text, f"{where}: unlike a missing one: {missing.text}"
        return
    if call.expect is Expect.FORBIDDEN:
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", where
        return
    assert r.status_code == call.status, where
    assert not leaked(r.text, w.a_names, call.echoes), (
        f"{where}: leaks {leaked(r.text, w.a_names, call.echoes)}"
    )
    if call.shows is not None:
        assert call.shows in r.text, f"{where}: B's own {call.shows} is missing"
    if call.body is not None:
        assert r.json() == call.body, where


def own_counts(jobs: list[Job]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for job in jobs:
        per = counts.setdefault(job.queue, {})
        per[job.status.value] = per.get(job.status.value, 0) + 1
    return counts
