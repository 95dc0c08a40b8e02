"""The `conveyor` command line, run as real subprocesses against a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

APP = """
import asyncio
from conveyor import Conveyor
app = Conveyor()

@app.task(retries=0)
async def enrich(ctx, record_id: str, steps: int = 2) -> dict:
    for i in range(steps):
        await asyncio.sleep(0.02)
        await ctx.progress((i + 1) * 100 / steps, f"step {i}")
    return {"record_id": record_id}
"""


@pytest.fixture
def cli(tmp_path: Path):
    (tmp_path / "myapp.py").write_text(APP)
    env = dict(os.environ, CONVEYOR_URL=f"sqlite:///{tmp_path}/c.db", PYTHONPATH=str(tmp_path))

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(f"{args} exited {res.returncode}: {res.stderr}")
        return res

    run.env = env  # type: ignore[attr-defined]
    run.cwd = tmp_path  # type: ignore[attr-defined]
    return run


def _jobs(cli) -> list[dict]:
    return json.loads(cli("list", "--json").stdout)["jobs"]


def test_enqueue_then_status(cli) -> None:
    job_id = cli("--app", "myapp:app", "enqueue", "enrich", "--payload", '{"record_id": "r1"}',
                 "--priority", "high").stdout.strip()  # fmt: skip
    status = json.loads(cli("status", job_id, "--json").stdout)
    assert status["id"] == job_id
    assert status["status"] == "queued"
    assert status["priority"] == 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--payload", '{"record_idx": "r1"}'], "payload.record_id"),
        (["--payload", "not json"], "JSON"),
        (["--payload", '{"record_id": "r1"}', "--delay", "-1"], "delay"),
        (["--payload", '{"record_id": "r1"}', "--priority", "extreme"], "priority"),
        (["--payload", '{"record_id": "r1"}', "--priority", "101"], "priority"),
    ],
)
def test_bad_enqueue_input_is_a_clear_error_and_stores_nothing(cli, args, needle) -> None:
    res = cli("--app", "myapp:app", "enqueue", "enrich", *args, check=False)
    assert res.returncode != 0
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert _jobs(cli) == []


def test_unknown_task_malformed_url_and_missing_job_are_clear_errors(cli) -> None:
    res = cli("--app", "myapp:app", "enqueue", "nope", check=False)
    assert res.returncode != 0 and "unknown task 'nope'" in res.stderr
    res = cli("--url", "bogus://x", "list", check=False)
    assert res.returncode != 0 and "malformed backend URL" in res.stderr
    res = cli("status", "no-such-job", check=False)
    assert res.returncode != 0 and "not found" in res.stderr
    res = cli("enqueue", "enrich", check=False)
    assert res.returncode != 0 and "--app" in res.stderr
    for r in (res,):
        assert "Traceback" not in r.stderr


def test_cancel_retry_cleanup_and_stats(cli) -> None:
    job_id = cli("--app", "myapp:app", "enqueue", "enrich", "--payload",
                 '{"record_id": "r1"}').stdout.strip()  # fmt: skip
    assert cli("cancel", job_id).stdout.split() == [job_id, "cancelled"]
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["default"]["counts"]["cancelled"] == 1
    assert cli("retry", job_id).stdout.split() == [job_id, "queued"]
    cli("cancel", job_id)
    assert "removed 1 jobs" in cli("cleanup").stdout
    assert _jobs(cli) == []
    assert "default" in cli("stats").stdout


def test_worker_runs_jobs_wait_prints_the_result_and_sigterm_exits_0(cli) -> None:
    job_id = cli("--app", "myapp:app", "enqueue", "enrich", "--payload",
                 '{"record_id": "r7", "steps": 3}').stdout.strip()  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", "myapp:app", "-c", "2"],
                              cwd=cli.cwd, env=cli.env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        res = cli("wait", job_id, "--timeout", "30")
        assert json.loads(res.stdout) == {"record_id": "r7"}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert json.loads(cli("status", job_id, "--json").stdout)["status"] == "completed"


def test_wait_times_out_with_exit_3(cli) -> None:
    job_id = cli("--app", "myapp:app", "enqueue", "enrich", "--payload",
                 '{"record_id": "r1"}').stdout.strip()  # fmt: skip
    t0 = time.monotonic()
    res = cli("wait", job_id, "--timeout", "0.3", check=False)
    assert res.returncode == 3
    assert time.monotonic() - t0 < 20
