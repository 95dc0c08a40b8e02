"""The conveyor app the API tests serve: a few tasks with known behaviour."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import Context, Conveyor


def build_app(url: str, **options: Any) -> Conveyor:
    app = Conveyor(url, **options)

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

    return app
