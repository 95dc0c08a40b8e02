"""`Client`: the producer API of a remote conveyor, over its HTTP API (``conveyor serve``).

```python
from conveyor import Client

async with Client("http://127.0.0.1:8000", api_key="cvk_...") as client:
    job = await client.enqueue("enrich", {"session_id": "s-1"}, priority="high")
    result = await client.wait(job.id, timeout=60)
    async for event in client.events(job_id=job.id): ...

client = Client(url, api_key)           # sync code: the same calls through `client.sync`
job = client.sync.enqueue("enrich", {"session_id": "s-2"})
client.sync.close()
```

The names and return types are the producer API's (`Conveyor.enqueue`, `get`, `list`, `cancel`,
`retry`, `wait`, `events`...): code can move between an embedded app and a remote one. Errors
answered by the server become conveyor's exceptions: 404 `JobNotFound`, 409 `JobStateError`
(`EventsTrimmed` for a trimmed event cursor), 422 `ValidationError` (`UnknownTask`), 429
``queue_full`` `QueueFull`, 503 `BackendUnavailable` (also when the server cannot be reached),
401/403 `AuthError`, anything else `RemoteError`. Needs ``conveyor[client]`` (httpx).

One `Client` belongs to one event loop (its connection pool does); `sync` runs every call on
the facade's own loop, so use either the async methods or ``sync`` on one client, not both.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from .backends.records import Event, EventType
from .client_errors import error_of, transport_error
from .errors import JobCancelled, JobFailed, ValidationError
from .job import Job, JobState, Progress
from .sync import SyncFacade
from .workflows import WorkflowInfo, workflow_of

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "conveyor.Client needs httpx: install the client extra, pip install 'conveyor[client]'"
    ) from exc

log = logging.getLogger("conveyor.client")

_JOB_FIELDS = {f.name for f in fields(Job)}
_EVENT_TYPES = {e.value: e for e in EventType}
RECONNECTS = 5  # consecutive failed (re)connections before events() gives up


@dataclass(slots=True)
class RemoteBatch:
    """What `Client.enqueue_many` stored: the batch id and its job ids in item order."""

    id: str
    job_ids: list[str]
    total: int
    created: int  # jobs this call stored (0: an idempotent replay of the same batch)
    estimate: dict[str, Any] | None = None


@dataclass(slots=True)
class RemotePage:
    """One page of `Client.list`: jobs newest first, and the cursor of the next page."""

    jobs: list[Job]
    next_cursor: str | None


def job_of(data: Mapping[str, Any]) -> Job:
    """A `Job` from the API's JSON (fields the server adds and `Job` lacks are ignored)."""
    kw = {k: v for k, v in data.items() if k in _JOB_FIELDS}
    kw["status"] = JobState(data["status"])
    kw["progress"] = Progress(**(data.get("progress") or {}))
    kw["meta"] = data.get("meta") or {}
    kw["next_jobs"] = tuple(data.get("next_jobs") or ())
    return Job(**kw)


def _seconds(delay: float | timedelta | datetime | None) -> float | None:
    if delay is None or isinstance(delay, int | float):
        return delay
    if isinstance(delay, timedelta):
        return delay.total_seconds()
    if isinstance(delay, datetime):
        return (delay - datetime.now(delay.tzinfo)).total_seconds()
    raise ValidationError(f"delay must be seconds, a timedelta or a datetime, not "
                          f"{type(delay).__name__}", field="delay")  # fmt: skip


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Client:
    """The producer API of the conveyor served at ``url``, authenticated by ``api_key``.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: the full key (``conveyor keys create``); None for a ``--no-auth`` server.
        timeout: seconds for each request (an event stream waits as long as it has to).
        transport: an httpx transport (tests, proxies); default: a pooled HTTP transport.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._sync: SyncFacade | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (sync code: ``client.sync.close()``, which also stops the
        facade's loop)."""
        await self._http.aclose()

    @property
    def sync(self) -> SyncFacade:
        """The same calls for sync code (``client.sync.get(id)``), run on a private loop."""
        if self._sync is None:
            self._sync = _SyncClient(self)
        return self._sync

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        try:
            r = await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
        if r.status_code >= 400:
            raise error_of(r.status_code, r.content, r.headers, path)
        return r.json()

    # -- producing ------------------------------------------------------------------------------

    async def enqueue(
        self,
        task: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int | str | None = None,
        delay: float | timedelta | datetime | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        max_attempts: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Job:
        """Submit one job (``POST /v1/jobs``); the server validates it like `Conveyor.enqueue`.
        ``Job.created`` is False when the idempotency key matched an existing job."""
        body = _params(task=task, payload=payload or {}, priority=priority, delay=_seconds(delay),
                       idempotency_key=idempotency_key, tenant=tenant,
                       max_attempts=max_attempts, meta=meta)  # fmt: skip
        out = await self._call("POST", "/v1/jobs", json=body)
        job = job_of(out["job"])
        job.created = bool(out.get("created", True))
        return job

    async def enqueue_many(
        self,
        items: Iterable[tuple[str, dict[str, Any]] | Mapping[str, Any]],
        *,
        priority: int | str | None = None,
        delay: float | timedelta | None = None,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        batch: str | None = None,
        on_complete: str | Mapping[str, Any] | None = None,
        on_success: str | Mapping[str, Any] | None = None,
        batch_ttl: float | None = None,
    ) -> RemoteBatch:
        """Submit many jobs atomically (``POST /v1/jobs/batch``): items are ``(task, payload)``
        or dicts like `Conveyor.enqueue_many`'s (without ``tenant``: a batch has one).
        ``idempotency_key`` keys the whole batch: the same key again returns the same batch.
        ``on_complete``/``on_success``/``batch_ttl``: callbacks as `Conveyor.enqueue_many`'s;
        ``batch``: add the items to that open batch (``POST /v1/batches/{id}/jobs``)."""
        jobs = [
            {"task": it[0], "payload": it[1]} if isinstance(it, tuple) else dict(it) for it in items
        ]
        body = _params(jobs=jobs, priority=priority, delay=_seconds(delay), tenant=tenant,
                       on_complete=on_complete, on_success=on_success,
                       batch_ttl=batch_ttl)  # fmt: skip
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        path = "/v1/jobs/batch" if batch is None else f"/v1/batches/{_segment(batch)}/jobs"
        out = await self._call("POST", path, json=body, headers=headers)
        b = out["batch"]
        return RemoteBatch(b["id"], list(out["jobs"]), b["total"], b["created"],
                           out.get("estimate"))  # fmt: skip

    # -- reading and steering -------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """One job; `JobNotFound` also for another tenant's."""
        return job_of(await self._call("GET", f"/v1/jobs/{_segment(job_id)}"))

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """A workflow (chain) by its first job's id; `WorkflowNotFound` also for another
        tenant's."""
        out = await self._call("GET", f"/v1/workflows/{_segment(workflow_id)}")
        return workflow_of(out)

    async def list(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        batch: str | None = None,
        tenant: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RemotePage:
        """Jobs newest first; pass ``page.next_cursor`` as ``cursor`` for the next page."""
        st = status.value if isinstance(status, JobState) else status
        params = _params(status=st, queue=queue, task=task, batch=batch, tenant=tenant,
                         limit=limit, cursor=cursor)  # fmt: skip
        out = await self._call("GET", "/v1/jobs", params=params)
        return RemotePage([job_of(j) for j in out["jobs"]], out.get("next_cursor"))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending or active job (idempotent); `JobStateError` when it ended."""
        return job_of(await self._call("DELETE", f"/v1/jobs/{_segment(job_id)}"))

    async def retry(self, job_id: str) -> Job:
        """Requeue a failed or cancelled job; `JobStateError` otherwise, `QueueFull`."""
        return job_of(await self._call("POST", f"/v1/jobs/{_segment(job_id)}/retry"))

    async def resume(self, job_id: str, data: Any = None) -> Job:
        """Continue an awaiting job with the decision ``data`` (JSON); `JobStateError` when it
        is not awaiting (resumed already, timed out, cancelled...)."""
        body = {"data": data}
        return job_of(await self._call("POST", f"/v1/jobs/{_segment(job_id)}/resume", json=body))

    async def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch's status: ``id``, ``total``, ``counts`` by state, ``done``, ``percent``,
        ``eta``, and ``record`` (callbacks: job ids and states, ``fired``) or None."""
        return await self._call("GET", f"/v1/batches/{_segment(batch_id)}")  # type: ignore[no-any-return]

    async def stats(self) -> dict[str, dict[str, Any]]:
        """Per queue (by name): counts by state, capacity, run time, throughput,
        backpressure — a tenant key's counts are its own jobs'."""
        out = await self._call("GET", "/v1/stats")
        return dict(out["queues"])

    async def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 0.5) -> Any:
        """Wait for a job to end and return its result; raise `JobFailed`, `JobCancelled`, or
        `TimeoutError` after ``timeout`` seconds. Polls the job, from every few milliseconds
        up to every ``poll`` seconds (one cheap request each)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        interval = 0.01
        while True:
            job = await self.get(job_id)
            if job.status is JobState.COMPLETED:
                return job.result
            if job.status is JobState.FAILED:
                raise JobFailed(job_id, job.error)
            if job.status is JobState.CANCELLED:
                raise JobCancelled(job_id)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id!r} still {job.status.value} after {timeout}s")
            await asyncio.sleep(interval if left is None else min(interval, left))
            interval = min(poll, interval * 2)

    async def events(
        self,
        since: str | None = None,
        *,
        follow: bool = True,
        queue: str | None = None,
        job_id: str | None = None,
        batch: str | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Event]:
        """Events after the cursor ``since`` (None: from now; ``"oldest"``: all kept), each
        once, oldest first, from ``GET /v1/events``. A dropped connection is resumed from the
        last event's cursor (nothing missed, nothing twice); `BackendUnavailable` after
        `RECONNECTS` failed attempts in a row. `EventsTrimmed` when retention deleted events
        after the cursor. With ``follow=False`` it ends after the events logged so far."""
        params = _params(queue=queue, job=job_id, batch=batch, tenant=tenant,
                         follow=None if follow else "false")  # fmt: skip
        cursor = since
        failures = 0
        while True:
            headers = {"Last-Event-ID": cursor} if cursor is not None else {}
            try:
                async with self._http.stream("GET", "/v1/events", params=params,
                                             headers=headers, timeout=_STREAM_TIMEOUT) as r:  # fmt: skip
                    if r.status_code >= 400:
                        raise error_of(r.status_code, await r.aread(), r.headers, "/v1/events")
                    failures = 0
                    async for ev in _sse_events(r):
                        cursor = ev.cursor
                        yield ev
                if not follow:
                    return
            except httpx.TransportError as exc:
                failures += 1
                if failures >= RECONNECTS:
                    raise transport_error(self.url, exc) from exc
                log.info("event stream dropped (%r); resuming from %s", exc, cursor)
                await asyncio.sleep(min(2.0, 0.1 * 2**failures))


class _SyncClient(SyncFacade):
    """`SyncFacade` over a `Client`: ``close`` also closes the client's connections."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)  # type: ignore[arg-type]  # the facade takes any coroutines
        self._client = client

    def close(self) -> None:
        """Close the client's connections, then stop the facade's loop."""
        if self._loop is not None:
            self.run(self._client.close())
        super().close()


# Reads wait for the next event or keep-alive (sent every sse_keepalive seconds, 15 by default).
_STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)


def _segment(ident: str) -> str:
    """An id as one URL path segment (a '/' or '?' in it must not change the route)."""
    from urllib.parse import quote

    return quote(ident, safe="")


async def _sse_events(r: httpx.Response) -> AsyncIterator[Event]:
    """The events of an SSE response; an ``error`` event raises its exception."""
    import orjson

    kind: str | None = None
    data: builtins.list[str] = []
    async for line in r.aiter_lines():
        if line == "":
            if data and kind is not None:
                body = orjson.loads("\n".join(data))
                if kind == "error":
                    err = body.get("error", {})
                    status = _ERROR_STATUS.get(err.get("code", ""), 503)
                    raise error_of(status, orjson.dumps(body), {}, "/v1/events")
                if kind in _EVENT_TYPES:  # a newer server's event types are skipped
                    yield Event(body["cursor"], _EVENT_TYPES[kind], body.get("job_id"),
                                body.get("queue"), body.get("task"), body.get("tenant"),
                                body["time"], body.get("data") or {})  # fmt: skip
            kind, data = None, []
        elif line.startswith(":"):
            continue  # keep-alive
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


# The status an error sent inside a stream would have had before it started.
_ERROR_STATUS = {"events_trimmed": 409, "invalid": 422, "not_found": 404, "internal": 500,
                 "unauthorized": 401}  # fmt: skip

__all__ = ["Client", "RemoteBatch", "RemotePage", "job_of"]
