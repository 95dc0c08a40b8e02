"""The conveyor app the dashboard tests serve: the API tests' tasks plus a few with progress
and a failure the test controls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conveyor import Context, Conveyor
from tests.server.apps import build_app


def build_dash_app(url: str, **options: Any) -> Conveyor:
    app = build_app(url, **options)

    @app.task(queue="default", retries=0)
    async def step(ctx: Context, i: int = 0, seconds: float = 0.2) -> dict[str, int]:
        """Reports progress halfway, then finishes."""
        await ctx.progress(50, f"record {i} halfway")
        await asyncio.sleep(seconds)
        return {"i": i}

    @app.task(queue="default", retries=0)
    async def flip(marker: str) -> str:
        """Fails while the file ``marker`` exists (the test removes it before a retry)."""
        if Path(marker).exists():
            raise RuntimeError("the marker file is still there")
        return "done"

    return app
