"""`backend_deadline`: a backend call that takes longer than the server's ``backend_timeout``
answers 503 instead of holding the client (a stopped Redis, a locked SQLite file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import ApiError
from .settings import ServerSettings


@asynccontextmanager
async def backend_deadline(settings: ServerSettings) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(settings.backend_timeout):
            yield
    except TimeoutError:
        raise ApiError(
            503,
            "backend_unavailable",
            f"the job store did not answer within {settings.backend_timeout:g}s; try again",
            headers={"Retry-After": "1"},
        ) from None
