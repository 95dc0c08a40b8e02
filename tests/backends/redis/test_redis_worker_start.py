"""A `conveyor worker` started while Redis is down waits for it (one line when it starts
waiting, one when connected) instead of exiting 1, and a SIGTERM during the wait ends it
cleanly and at once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from conveyor import Conveyor
from tests.conftest import eventually
from tests.servers import RedisServer
from tests.workers import WorkerProcesses


def _down_server(tmp_path: Path) -> RedisServer:
    srv = RedisServer(tmp_path / "redis", appendonly=True)
    srv.stop(signal.SIGKILL)  # its port is known; nothing listens there now
    return srv


async def test_a_worker_started_while_redis_is_down_waits_and_then_works(
    tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given Redis is down
    srv = _down_server(tmp_path)
    out = tmp_path / "ran"
    try:
        # When a worker starts
        w = worker_processes.conveyor(
            "--command", f"touch=touch {out}", env={"CONVEYOR_URL": srv.url}
        )  # fmt: skip
        await asyncio.to_thread(w.wait_for_output, "waiting for Redis")
        assert w.poll() is None, w.tail()
        # And Redis starts later
        await asyncio.to_thread(srv.start)
        await asyncio.to_thread(w.wait_for_output, "started: pid=")
        # Then the worker runs jobs without being restarted
        app = Conveyor(srv.url)
        app.command("touch", f"touch {out}")  # the worker's task, declared here too
        try:
            await app.enqueue("touch", {})
            await eventually(out.exists, timeout=20, what="the job ran")
        finally:
            await app.close()
        # And it said so once each: waiting, connected
        text = w.output()
        assert text.count("waiting for Redis") == 1, w.tail()
        assert text.count("connected to Redis after") == 1, w.tail()
        assert "Traceback" not in text, w.tail()
        w.send_signal(signal.SIGTERM)
        assert await w.wait_exit(10) == 0
    finally:
        srv.stop()


async def test_sigterm_while_waiting_for_redis_exits_0_at_once(
    tmp_path: Path, worker_processes: WorkerProcesses
) -> None:
    # Given a worker waiting for Redis, which is down
    srv = _down_server(tmp_path)
    w = worker_processes.conveyor(
        "--command", "noop=true", env={"CONVEYOR_URL": srv.url}
    )  # fmt: skip
    await asyncio.to_thread(w.wait_for_output, "waiting for Redis")
    # When it gets SIGTERM
    started = time.monotonic()
    w.send_signal(signal.SIGTERM)
    # Then it exits 0 within a second or two, without a traceback
    assert await w.wait_exit(5) == 0, w.tail()
    assert time.monotonic() - started < 2.0
    assert "Traceback" not in w.output(), w.tail()
