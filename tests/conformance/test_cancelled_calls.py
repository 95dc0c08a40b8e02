"""A backend call whose task is cancelled ends cancelled, wherever in the call the cancel lands:
the caller's cancel is never swallowed (on Python 3.11 redis-py's ``asyncio.wait_for`` used to
drop it when it landed as a send completed, so an event reader ignored its stop and kept
reading; `backends/redis/operations.py`)."""

from __future__ import annotations

import asyncio

from conveyor import Conveyor

TURNS = 40  # event-loop turns after the call begins: past every await of one read


async def _cancelled_after(call: asyncio.Task[None], turns: int) -> bool | None:
    """Cancel ``call`` after ``turns`` turns of the loop: None if it had already returned,
    else whether it ended cancelled. A call that did not is cancelled again until it ends,
    so that none is left running."""
    for _ in range(turns):
        await asyncio.sleep(0)
    if not call.cancel():
        return None
    await asyncio.wait([call], timeout=2)
    ok = call.cancelled()
    for _ in range(50):
        if call.done():
            break
        call.cancel()
        await asyncio.wait([call], timeout=0.1)
    return ok


async def _get(app: Conveyor, job_id: str) -> None:
    await app.get(job_id)


async def test_a_read_cancelled_at_any_point_ends_cancelled(app: Conveyor) -> None:
    # Given a stored job
    app.declare("noop", queue="cancels")
    job = await app.enqueue("noop", {})
    # When a read of it is cancelled after each number of loop turns up to TURNS
    ignored = []
    for turns in range(TURNS):
        call = asyncio.create_task(_get(app, job.id))
        if await _cancelled_after(call, turns) is False:
            ignored.append(turns)
    # Then every read still running when cancelled ended cancelled, none returned its job
    assert ignored == [], f"cancel ignored after {ignored} loop turns"


async def test_an_event_reader_stops_when_cancelled_at_any_point(app: Conveyor) -> None:
    # Given events in the log
    app.declare("noop", queue="cancels")
    await app.enqueue_many([("noop", {}) for _ in range(3)])

    async def follow() -> None:
        async for _ in app.events(since="0", poll=0.001):
            pass

    # When a reader following the log is cancelled after each number of loop turns
    ignored = []
    for turns in range(TURNS):
        reader = asyncio.create_task(follow())
        if await _cancelled_after(reader, turns) is False:
            ignored.append(turns)
    # Then every reader stopped
    assert ignored == [], f"reader kept reading when cancelled after {ignored} loop turns"
