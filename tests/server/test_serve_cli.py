"""``conveyor serve`` as a real subprocess: it prints its URL, serves the API with keys, runs
jobs with ``--with-worker``, hands running jobs back and exits 0 on SIGTERM, and refuses
``--no-auth`` off loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from conveyor import Conveyor
from tests.conftest import eventually
from tests.workers import WorkerProcess, WorkerProcesses, subprocess_env

APP_MODULE = """
import os
from tests.server.apps import build_app

app = build_app(os.environ["SERVE_TEST_URL"])
"""


def _create_key(url: str, *args: str) -> str:
    """``conveyor keys create *args --json`` -> the full key it prints once."""
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", url, "keys", "create", *args, "--json"],
        env=subprocess_env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return str(json.loads(out.stdout)["key"])


def _start(
    procs: WorkerProcesses, tmp_path: Path, url: str, *args: str
) -> tuple[WorkerProcess, str]:
    (tmp_path / "serveapp.py").write_text(APP_MODULE)
    proc = procs.start("-m", "conveyor", "serve", "serveapp:app", "--port", "0", *args,
                       path=[tmp_path], env={"SERVE_TEST_URL": url}, cwd=tmp_path)  # fmt: skip
    proc.wait_for_output("conveyor serve: http://", timeout=30)
    m = re.search(r"conveyor serve: (http://127\.0\.0\.1:\d+)", proc.output())
    assert m, proc.output()
    return proc, m[1]


async def test_serve_with_worker_runs_a_submitted_job_and_exits_0_on_sigterm(
    worker_processes: WorkerProcesses, tmp_path: Path, server_backend_url: str
) -> None:
    # Given a key of tenant acme made by `conveyor keys create`, and `conveyor serve
    # --with-worker` on a free port
    key = _create_key(server_backend_url, "--tenant", "acme")
    proc, base = _start(worker_processes, tmp_path, server_backend_url, "--with-worker",
                        "--concurrency", "2")  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        # When a job is submitted over HTTP
        r = await http.post("/v1/jobs", json={"task": "echo", "payload": {"value": "hi"}})
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]

        # Then the in-process worker completes it
        async def done() -> Any:
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            return job if job["status"] == "completed" else None

        assert (await eventually(done))["result"] == "hi"
        # And requests without a key are refused, /health is open
        assert (await http.get("/v1/stats", headers={"Authorization": ""})).status_code == 401
        assert (await http.get("/health")).json() == {"healthy": True}
    # When it gets SIGTERM
    proc.send_signal(signal.SIGTERM)
    # Then it exits 0, saying so
    assert await proc.wait_exit(30) == 0
    assert "conveyor serve stopped" in proc.output()


async def test_sigterm_hands_the_running_job_back_to_the_queue(
    worker_processes: WorkerProcesses,
    tmp_path: Path,
    server_backend_url: str,
    store: Conveyor,
) -> None:
    # Given `conveyor serve --with-worker` running a long job
    proc, _ = _start(worker_processes, tmp_path, server_backend_url, "--with-worker",
                     "--shutdown-grace", "0.2")  # fmt: skip
    job = await store.enqueue("hold", {"seconds": 60})
    await eventually(lambda: _status(store, job.id, "active"))
    # When the server gets SIGTERM
    proc.send_signal(signal.SIGTERM)
    # Then it exits 0 and the job is back in the queue, no attempt charged
    assert await proc.wait_exit(30) == 0
    back = await store.get(job.id)
    assert back.status.value == "queued" and back.attempt == 0, back


async def test_no_auth_is_refused_off_loopback(
    worker_processes: WorkerProcesses, tmp_path: Path, server_backend_url: str
) -> None:
    # Given `conveyor serve --no-auth` asked to listen on every interface
    (tmp_path / "serveapp.py").write_text(APP_MODULE)
    proc = worker_processes.start(
        "-m", "conveyor", "serve", "serveapp:app", "--no-auth", "--host", "0.0.0.0",
        path=[tmp_path], env={"SERVE_TEST_URL": server_backend_url}, cwd=tmp_path,
    )  # fmt: skip
    # Then it refuses to start, naming the problem, with a non-zero exit
    assert await proc.wait_exit(30) == 2
    assert "--no-auth is refused on --host 0.0.0.0" in proc.output()


async def _status(store: Conveyor, job_id: str, status: str) -> bool:
    return (await store.get(job_id)).status.value == status
