"""ONE conveyor worker process for the bench: ``python -m bench.worker --concurrency C``.

Runs ``async with app.worker(concurrency=C)`` on ``$BENCH_URL`` until SIGTERM/SIGINT, then
stops the way a deployed worker does (finish active jobs, flush acknowledgements). Writes
``--ready FILE`` once the worker has started (used by the idle measurement only; the drains
time from spawn, imports included, like the peers).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from bench.common import make_app


async def main(args: argparse.Namespace) -> None:
    app = make_app()
    if os.environ.get("BENCH_PROMETHEUS"):  # run.py --prometheus: the worker's metrics on
        from conveyor.metrics import PrometheusHook, serve

        hook = PrometheusHook()
        app.add_hook(hook)
        serve(hook.registry, 0)  # served as `conveyor worker --metrics-port` would
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app, app.worker(concurrency=args.concurrency):
        if args.ready:
            Path(args.ready).write_text("ready\n")
        await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--ready", default="")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(main(ap.parse_args()))
