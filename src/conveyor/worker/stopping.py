"""The stop path of a worker: stop claiming, let active jobs finish within the grace, hand the
rest back uncharged, flush acknowledgements, stop the services, disconnect; then the
``on_worker_stop`` hooks. Every step is bounded, so a stop always returns."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .services import bounded

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")
STOP_MARGIN = 0.75
"""Seconds of a shutdown grace kept for what follows the wait for jobs (handing back, flushing,
disconnecting, the process's exit), plus 4 measured backend round trips (`Worker.stop`)."""


async def stop_worker(w: Worker, grace: float) -> None:
    """`Worker.stop`: the grace bounds the whole stop, from now."""
    if w._stopping:
        await w._stopped.wait()
        return
    w._stopping = True
    w._wake.set()
    # The wait for jobs ends early enough for the hand-back and disconnect to fit in it too.
    margin = min(grace / 2, STOP_MARGIN + 4 * w.round_trip)
    try:
        await _wind_down(w, asyncio.get_running_loop().time() + grace - margin)
    finally:
        await w._services.close()
        w._pool.shutdown(wait=False, cancel_futures=True)
        w._stopped.set()
        log.info("worker %s stopped after %d jobs", w.id, w.processed)
        if w.bus.stop:
            w.bus.worker_stopped(w)


async def _wind_down(w: Worker, deadline: float) -> None:
    if w._pump_task is not None and not await bounded(w._pump_task):
        log.error("worker %s: a backend round hung; cancelled it", w.id)
        w._services.hung()
        for t in (w._pump_task, *w._rounds):
            t.cancel()
        await asyncio.wait([w._pump_task, *w._rounds], timeout=1.0)
    pending = [r.task for r in w.running.values() if r.task is not None]
    wait = max(0.0, deadline - asyncio.get_running_loop().time())
    if pending:
        log.info("worker %s: waiting up to %.2fs for %d active jobs", w.id, wait, len(pending))
        await asyncio.wait(pending, timeout=wait)
    leftover = [r for r in w.running.values() if not r.lost]
    if leftover:
        for r in leftover:
            r.released = True
            r.ctx._set_cancelled()
            if r.task is not None:
                r.task.cancel()
        # Hand back before flushing acknowledgements: the unstarted jobs must not depend on the
        # store taking outcomes.
        await w._services.hand_back([r.key for r in leftover], "unfinished")
        tasks = [r.task for r in leftover if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
    await w._services.flush()
