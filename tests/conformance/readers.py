"""Reading the event log the two ways the conformance tests do: as an app follows it, and page
by page with the backend's own paging."""

from __future__ import annotations

from conveyor import Conveyor, Event
from conveyor.backends.base import EventFilter


async def read_all(app: Conveyor, since: str = "0", **filters: str) -> list[Event]:
    """Every event after ``since`` (``app.events``, not following)."""
    return [e async for e in app.events(since=since, follow=False, **filters)]


async def read_in_pages(
    app: Conveyor, limit: int, where: EventFilter | None = None, since: str = "0"
) -> list[Event]:
    """The log read with the backend's paging: page after page until it says there is no more."""
    out: list[Event] = []
    while True:
        page = await app.backend.read_events(since, limit, where)
        assert len(page.events) <= limit
        out += page.events
        since = page.cursor
        if not page.more:
            return out
