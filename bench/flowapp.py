"""The app `bench/flow.py` F2 runs in worker processes: one task limited to $BENCH_RATE/s."""

from __future__ import annotations

import os

from conveyor import Conveyor


def make_app(url: str | None = None) -> Conveyor:
    app = Conveyor(url or os.environ.get("CONVEYOR_URL"))
    rate = int(os.environ.get("BENCH_RATE", "200"))

    @app.task(name="paced", rate_limit=f"{rate}/s")
    async def paced() -> None:
        """Does nothing: the claim is what is measured."""

    return app


app = make_app()
