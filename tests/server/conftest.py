"""Fixtures of the HTTP API tests: `serve` starts a real uvicorn on loopback (`ApiServer`) over
the test's store — SQLite and Redis — and `keys` makes API keys in that store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.server import ServerSettings
from tests.conftest import URL_FACTORIES
from tests.server.apps import build_app
from tests.server.harness import ApiServer

SERVER_BACKENDS = ["sqlite", "redis"]


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return URL_FACTORIES[request.param](request, tmp_path)


@pytest.fixture
def serve(server_backend_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """``serve(settings=None, worker=None, **app_options)`` -> a started `ApiServer` on this
    test's store (stopped at teardown). Uploads go under the test's temp dir by default."""
    started: list[ApiServer] = []

    def start(
        settings: ServerSettings | None = None,
        worker: dict[str, Any] | None = None,
        **app_options: Any,
    ) -> ApiServer:
        settings = settings or ServerSettings(upload_dir=tmp_path / "uploads")
        srv = ApiServer(lambda: build_app(server_backend_url, **app_options), settings,
                        worker=worker)  # fmt: skip
        started.append(srv.start())
        return srv

    yield start
    for srv in reversed(started):
        srv.stop()


@pytest.fixture
async def store(server_backend_url: str) -> AsyncIterator[Conveyor]:
    """A `Conveyor` on the server's store, in the test's own loop (for setup and checks)."""
    app = build_app(server_backend_url)
    yield app
    await app.close()


@pytest.fixture
def keys(store: Conveyor) -> Callable[..., Any]:
    """``await keys(tenant="acme", admin=False, read_only=False)`` -> the full key string."""

    async def make(tenant: str | None = None, *, admin: bool = False,
                   read_only: bool = False) -> str:  # fmt: skip
        _, secret = await store.api_keys.create(tenant=tenant, admin=admin, read_only=read_only)
        return secret

    return make


def client(srv: ApiServer, key: str | None = None, **kw: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=10.0, **kw)
