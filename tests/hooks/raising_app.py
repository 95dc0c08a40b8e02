"""An app for a `conveyor worker` process whose hook raises in every worker-side method."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor import Context, Conveyor, Hooks, Job, Outcome, Worker


class Raising(Hooks):
    async def around_execute(self, ctx: Context, call_next: Callable[[], Awaitable[Any]]) -> Any:
        raise RuntimeError("around_execute bug")

    def after_outcome(self, job: Job, outcome: Outcome) -> None:
        raise RuntimeError("after_outcome bug")

    def on_worker_start(self, worker: Worker) -> None:
        raise RuntimeError("start bug")

    def on_worker_stop(self, worker: Worker) -> None:
        raise RuntimeError("stop bug")

    def on_event(self, event: str, job: Job, data: Any) -> None:
        raise RuntimeError("event bug")


app = Conveyor(os.environ.get("CONVEYOR_URL"), hooks=[Raising()])


@app.task
async def work(secret: str, i: int) -> int:
    return i
