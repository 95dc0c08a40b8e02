"""`wait_for_backend`: a worker that starts while its backend is down waits for it.

Workers already running ride out a backend restart (their loops retry, see `outage`); a worker
started during the outage (a deploy, a machine booting before Redis, Redis still loading its
AOF and answering LOADING) used to exit 1 at its first call. Now it opens the backend with a
bounded back-off, logs once that it waits and once that it is connected, and gives up only
when it is told to stop.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..app import Conveyor
from ..outage import CONNECTION_ERRORS

log = logging.getLogger("conveyor.worker")
FIRST_DELAY = 0.1
MAX_DELAY = 2.0


async def wait_for_backend(app: Conveyor, who: str, stop: asyncio.Event) -> bool:
    """Open ``app``'s backend, retrying while it is unavailable, until it opens or ``stop`` is
    set. Returns True when open, False when stopped first (at once: the back-off sleep is cut
    short). An error that is not about the connection (a bad configuration) is raised."""
    delay = FIRST_DELAY
    since: float | None = None
    target = app.backend.__class__.__name__.removesuffix("Backend") or "the backend"
    while not stop.is_set():
        try:
            await app.open()
        except CONNECTION_ERRORS as exc:
            if since is None:
                since = time.monotonic()
                log.warning("%s: waiting for %s (%s); retrying until it answers", who, target,
                            _brief(exc))  # fmt: skip
        else:
            if since is not None:
                log.warning("%s: connected to %s after %.1fs", who, target,
                            time.monotonic() - since)  # fmt: skip
            return True
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, MAX_DELAY)
    return False


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
