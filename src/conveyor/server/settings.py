"""`ServerSettings`: what an operator configures on ``conveyor serve`` (and `create_app`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


@dataclass(slots=True)
class ServerSettings:
    """Limits and switches of one API server process. Every instance of a deployment should be
    started with the same settings: the server keeps no state of its own beyond caches, so any
    number of them can serve one backend."""

    #: False only for local development (``--no-auth``): every caller is an admin without a key.
    #: `conveyor serve` refuses it on a non-loopback bind.
    auth: bool = True
    #: Where uploaded files are stored (generated names only; one directory per tenant).
    upload_dir: Path = field(default_factory=lambda: Path("conveyor-uploads"))
    max_upload_bytes: int = 50 * MIB
    #: Content types an upload may declare; None: any.
    upload_types: tuple[str, ...] | None = None
    #: Seconds after an upload's job ended before its file is deleted.
    upload_ttl: float = 24 * 3600.0
    #: Largest JSON request body (a batch submit is the largest legitimate one).
    max_request_bytes: int = 16 * MIB
    #: Requests per second per API key (token bucket in this process); None: unlimited.
    rate_limit: float | None = 200.0
    rate_burst: int = 400
    #: Seconds a verified key is trusted without asking the backend again (and so the longest a
    #: revoked key keeps working on an instance that just saw it).
    key_cache_ttl: float = 2.0
    #: A backend call that takes longer than this answers 503 (a backend outage must not hang
    #: clients).
    backend_timeout: float = 2.0
    #: Seconds between SSE keep-alive comments on an idle event stream.
    sse_keepalive: float = 15.0
    #: Event streams this process keeps open at once; beyond it ``GET /v1/events`` answers 503
    #: ``too_many_streams`` (each open stream holds a connection and a task).
    max_streams: int = 1000
    #: Seconds a queue's stats are reused for the estimates of submits (`server.estimate`): a
    #: submit costs at most one extra backend read per this many seconds per queue.
    estimate_ttl: float = 1.0
    #: Seconds between the checks of the event log for new events while event streams are
    #: open (one check per server process, shared by every stream: `conveyor.server.event_hub`).
    sse_poll: float = 0.2
    #: Also serve ``/metrics`` without a key on this port (None: only the API's admin-keyed
    #: ``/metrics``); bind it where only Prometheus reaches.
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    #: The dashboard's signing secret (session cookies, CSRF tokens, batch links). Give every
    #: instance of a deployment the same one (``conveyor serve`` reads ``CONVEYOR_SECRET``);
    #: None: a random secret per process, so sessions and batch links end when it restarts.
    secret: str | None = None
    #: Seconds a dashboard login lasts (the key is checked again on every request anyway).
    session_ttl: float = 8 * 3600.0
    #: Seconds a read-only batch link (`conveyor.dashboard.tokens.batch_token`) stays valid.
    batch_link_ttl: float = 7 * 86400.0
    #: Who may embed the batch progress page in an ``<iframe>``: the CSP ``frame-ancestors``
    #: sources, e.g. ``("'self'", "https://app.example.com")``. Every other page refuses framing.
    frame_ancestors: tuple[str, ...] = ("'self'",)
    #: False: do not serve the dashboard at ``/`` (the API alone).
    dashboard: bool = True
