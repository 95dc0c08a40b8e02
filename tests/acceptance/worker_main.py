"""One conveyor worker process for the acceptance tests.

Configured through the environment: ``CONVEYOR_URL``, ``ACCEPT_LOG`` (the line log),
``ACCEPT_CONCURRENCY``, ``ACCEPT_QUEUES`` (comma-separated), ``ACCEPT_GRACE`` (shutdown grace,
seconds), ``ACCEPT_POLL`` (idle re-check interval, seconds), ``ACCEPT_TASKS`` (comma-separated
task names to register; default all). Logs ``ready <worker id>`` once it is claiming, and
``exit <worker id>`` after a clean stop. SIGTERM/SIGINT stop it gracefully; it then exits 0.

Run as ``python -m tests.acceptance.worker_main`` from the repository root.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from tests.acceptance.apps import make_app, record


def _csv(name: str) -> list[str] | None:
    value = os.environ.get(name)
    return [v for v in value.split(",") if v] if value else None


async def main() -> int:
    env = os.environ
    app = make_app(env["CONVEYOR_URL"], _csv("ACCEPT_TASKS"))
    options: dict[str, object] = {
        "concurrency": int(env.get("ACCEPT_CONCURRENCY", "4")),
        "queues": _csv("ACCEPT_QUEUES"),
        "shutdown_grace": float(env.get("ACCEPT_GRACE", "30")),
    }
    if "ACCEPT_POLL" in env:
        options["poll_interval"] = float(env["ACCEPT_POLL"])
    worker = app.worker(**options)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    stopped = asyncio.Event()

    def on_signal(signum: int) -> None:
        record("signal", str(signum))
        if not stopping:
            task = loop.create_task(worker.stop())
            task.add_done_callback(lambda _: stopped.set())
            stopping.append(task)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await worker.start()
    record("ready", worker.id)
    await stopped.wait()
    stopping[0].result()  # a failed stop exits non-zero with its traceback
    await app.close()
    record("exit", worker.id)
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    sys.exit(asyncio.run(main()))
