"""The demo's HTTP API: `conveyor.server.create_app` for the demo app under uvicorn, in the demo's
own event loop, on 127.0.0.1:8000 (or a free loopback port when 8000 is taken), with a demo
admin key; its dashboard serves the batch's progress page. Needs ``conveyor[server]`` (``make demo`` installs it); without it the demo runs
without the API and says so."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from conveyor import Conveyor

HOST, PORT = "127.0.0.1", 8000


@dataclass
class DemoApi:
    url: str
    key: str
    key_id: str
    api: Any = None  # the FastAPI app (its dashboard signs the batch links)

    def batch_link(self, batch_id: str) -> str:
        """The batch progress page's read-only link (no login) for the demo's batch."""
        signer = self.api.state.dashboard_signer
        token = signer.batch_token(batch_id, None, self.key_id)
        query = urlencode({"token": token, "noun": "record", "verb": "enriched"})
        return f"{self.url}/batches/{batch_id}?{query}"

    async def check_batch_page(self, batch_id: str) -> str:
        """One line from the dashboard: the batch page's percent, read through its link."""
        import httpx

        async with httpx.AsyncClient(timeout=5) as http:
            page = await http.get(self.batch_link(batch_id))
        found = re.search(r'data-percent="(\d+)"', page.text)
        return f"GET /batches/{batch_id}: {page.status_code}, {found[1] if found else '?'}% done"

    async def check(self) -> str:
        """One line from the API: health and the queue's counts, read with the demo key."""
        import httpx

        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=5) as http:
            health = (await http.get("/health")).json()
            stats = (await http.get("/v1/stats")).json()["queues"]
        counts = stats.get("enrichment", {}).get("counts", {})
        done = counts.get("completed", 0)
        return f"GET /health: healthy={health['healthy']}; GET /v1/stats: {done} completed"


def _port() -> int:
    """8000 when it is free on loopback, else any free port."""
    for port in (PORT, 0):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free loopback port")


@contextlib.asynccontextmanager
async def serve_api(app: Conveyor) -> AsyncIterator[DemoApi | None]:
    """Serve the API of ``app`` while the block runs (None when conveyor[server] is missing).
    The server's lifespan closes ``app`` when it stops."""
    try:
        import uvicorn

        from conveyor.server import ServerSettings, create_app
    except ImportError:
        yield None
        return
    record, key = await app.api_keys.create(tenant=None, admin=True, name="demo")
    # A secret of this run: the batch link the demo prints works while the demo runs.
    api = create_app(app, ServerSettings(secret=secrets.token_urlsafe(32)))
    config = uvicorn.Config(api, host=HOST, port=_port(), log_level="warning",
                            log_config=None, lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    task: asyncio.Task[Any] = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():  # it could not start (logged by uvicorn)
        yield None
        return
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield DemoApi(f"http://{HOST}:{port}", key, record.id, api)
    finally:
        server.should_exit = True
        await task
