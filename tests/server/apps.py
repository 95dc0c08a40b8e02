"""The conveyor app the API tests serve: a few tasks with known behaviour."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from conveyor import AwaitChildren, AwaitInput, Context, Conveyor


def build_app(url: str, *, max_queued_default: int | None = None, **options: Any) -> Conveyor:
    app = Conveyor(url, **options)
    if max_queued_default is not None:
        app.queue("default", max_queued=max_queued_default)

    @app.task(queue="default")
    async def echo(value: Any = None) -> Any:
        return value

    @app.task(queue="default", retries=0)
    async def boom(message: str = "on purpose") -> None:
        raise RuntimeError(message)

    @app.task(queue="slow")
    async def hold(ctx: Context, seconds: float = 30.0) -> str:
        await asyncio.sleep(seconds)
        return "held"

    @app.task(queue="default")
    async def batch_done(batch: str, counts: dict[str, int], total: int) -> dict[str, Any]:
        """A batch callback: answers what it was given."""
        return {"batch": batch, "counts": counts, "total": total}

    @app.task(queue="default", retries=0)
    async def approve(ctx: Context, what: str = "it") -> Any:
        """Awaits a decision (human in the loop); once resumed, returns it."""
        if not ctx.resumed:
            return AwaitInput({"question": f"approve {what}?"})
        return {"decision": ctx.input}

    @app.task(queue="default", retries=0)
    async def fan(ctx: Context, n: int = 2) -> Any:
        """Fans out ``n`` ``hold`` children (queue ``slow``) and returns their results."""
        if not ctx.resumed:
            ctx.spawn_many([("hold", {"seconds": 0}) for _ in range(n)])
            return AwaitChildren()
        return [c.result for c in ctx.children]

    @app.task(queue="default", retries=0)
    def digest(ctx: Context, file: Any = None, note: str | None = None) -> dict[str, Any]:
        """Reads its uploaded file through ctx.file: its sha256, size and client name."""
        h = hashlib.sha256()
        with ctx.file(file) as f:
            while chunk := f.read(1 << 16):
                h.update(chunk)
        meta = ctx.upload(file)
        return {"sha256": h.hexdigest(), "size": ctx.file_path(file).stat().st_size,
                "filename": meta.filename}  # fmt: skip

    return app
