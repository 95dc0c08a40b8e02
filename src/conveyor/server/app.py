"""`create_app`: the FastAPI application of ``conveyor serve`` for one conveyor app.

The server is stateless: everything lives in the backend (jobs, events, keys, pause flags), so
any number of instances can serve one backend. With ``workers`` it also runs a worker in its own
event loop task (``conveyor serve --with-worker``: the one-process deployment)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from . import errors
from .auth import KeyCache, RateLimiter
from .event_hub import EventHub
from .limits import BodyLimit
from .metrics import api_metrics
from .responses import Json
from .settings import ServerSettings

if TYPE_CHECKING:
    from ..app import Conveyor

API_VERSION = "1"


def create_app(
    conveyor: Conveyor,
    settings: ServerSettings | None = None,
    *,
    worker: dict[str, Any] | None = None,
) -> FastAPI:
    """The API for ``conveyor`` (and the dashboard at ``/``, `conveyor.dashboard`). ``worker``: options of `Conveyor.worker` to run one worker in
    this process for the server's lifetime (None: no worker)."""
    settings = settings or ServerSettings()
    # The served app stores and finds uploads where the server puts them; this also registers
    # the cleanup task (queue ``conveyor``) that its workers run.
    conveyor.use_uploads(settings.upload_dir)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await conveyor.open()
            stack.push_async_callback(conveyor.close)
            stack.callback(hub.close)
            if worker is not None:
                await stack.enter_async_context(conveyor.worker(**worker))
            if settings.metrics_port is not None and api.state.metrics is not None:
                api.state.metrics_port = await stack.enter_async_context(
                    api.state.metrics.serving(conveyor, settings.metrics_port,
                                              settings.metrics_addr)
                )  # fmt: skip
            yield

    api = FastAPI(
        title="conveyor",
        version=API_VERSION,
        summary="Durable background jobs: submit, follow, steer.",
        default_response_class=Json,
        lifespan=lifespan,
    )
    api.state.conveyor = conveyor
    hub = api.state.event_hub = EventHub(conveyor, settings.sse_poll, settings.backend_timeout)
    api.state.settings = settings
    api.state.key_cache = KeyCache(settings.key_cache_ttl)
    api.state.rate_limiter = (
        RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
    )
    api.state.metrics = api_metrics()
    if worker is not None and api.state.metrics is not None:
        api.state.metrics.watch_worker(conveyor)
    errors.install(api)
    from .routes import ROUTERS

    for router in ROUTERS:
        api.include_router(router)
    if settings.dashboard:
        from ..dashboard import install

        install(api, settings)
    api.add_middleware(BodyLimit, limit=settings.max_request_bytes, exempt=("/v1/uploads",))
    return api
