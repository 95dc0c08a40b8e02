"""The app of the cron process tests: a job every 0.3 s (``python -m conveyor worker
tests.processes.cronapp:app``). ``CRON_CATCH_UP`` sets its catch-up policy; each run is logged
to ``PROC_LOG`` with its tick's idempotency key."""

from __future__ import annotations

import os

from conveyor import Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
LOG = os.environ.get("PROC_LOG", os.devnull)
PERIOD = 0.3


def record(kind: str, key: str) -> None:
    # One short O_APPEND write per line: atomic between processes.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@app.periodic(PERIOD, catch_up=os.environ.get("CRON_CATCH_UP", "all"))
async def beat(ctx) -> None:  # type: ignore[no-untyped-def]
    record("run", ctx.job.idempotency_key)
