"""`WorkerEnv`: the narrow set of objects a worker depends on, instead of the whole `Conveyor`:
the `Backend`, the `Catalog` (tasks, queues, retention), the `HookBus`, and the producer-side
links of the process it runs in (open the backend, the spool to forward, in-process wake-ups).

`WorkerEnv.of(app)` builds it from an app (``app.worker()`` and ``Worker(app, ...)`` do); a host
without a `Conveyor` (the HTTP API's process, a test) can build one directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..inputs import PayloadLimits

if TYPE_CHECKING:
    from ..app import Conveyor
    from ..backends.base import Backend
    from ..catalog import Catalog
    from ..files import UploadStore
    from ..forwarder import Spooler
    from ..hooks import HookBus
    from .runtime import Worker


async def _nothing() -> None:
    return None


def _ignore(_: Any) -> None:
    return None


@dataclass(slots=True)
class WorkerEnv:
    """What a worker uses. ``attach``/``detach`` register it for in-process wake-ups and
    cancels (a producer in the same process); ``spooler`` is started to forward spooled jobs;
    ``uploads`` is where ``ctx.file`` finds uploaded files (None: the app has none)."""

    backend: Backend
    catalog: Catalog
    bus: HookBus
    open: Callable[[], Awaitable[None]] = field(default=_nothing)
    attach: Callable[[Worker], None] = field(default=_ignore)
    detach: Callable[[Worker], None] = field(default=_ignore)
    spooler: Spooler | None = None
    uploads: UploadStore | None = None
    # What a chain's next payload may be (`Next`), as for the app's producers.
    payload_limits: PayloadLimits = field(default_factory=PayloadLimits)

    @classmethod
    def of(cls, app: Conveyor) -> WorkerEnv:
        return cls(app.backend, app.catalog, app.bus, app.open, app._attach_worker,
                   app._detach_worker, app._spooler, uploads=app.uploads,
                   payload_limits=app.payload_limits)  # fmt: skip


def on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[str], object], arg: str) -> None:
    """Run ``fn(arg)`` on the worker's ``loop``: now if called there, else handed to it (a
    producer may call from another thread: ``app.sync``). Nothing when it has no loop yet."""
    if loop is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(arg)
    else:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs there
            loop.call_soon_threadsafe(fn, arg)
