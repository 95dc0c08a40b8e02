"""Fixtures for the command-line tests: a small app module and a SQLite file in ``tmp_path``,
and `Cli`, which runs ``python -m conveyor`` as a real subprocess against them (and worker
processes through `worker_processes`, killed at teardown)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.workers import WorkerProcess, WorkerProcesses, subprocess_env

APP_MODULE = '''
import asyncio
from pathlib import Path

from conveyor import AwaitInput, Context, Conveyor, Permanent

app = Conveyor()  # $CONVEYOR_URL


@app.task(retries=0)
async def enrich(ctx: Context, record_id: str, steps: int = 2) -> dict:
    for i in range(steps):
        await asyncio.sleep(0.01)
        await ctx.progress((i + 1) * 100 / steps, f"step {i + 1}", stage="enrich")
    return {"record_id": record_id, "steps": steps}


@app.task(queue="slow", retries=0)
async def hold(ctx: Context, gate: str) -> str:
    """Runs until the file ``gate`` exists: the test decides when it ends."""
    await ctx.progress(50, "holding", stage="hold")
    while not Path(gate).exists():
        await asyncio.sleep(0.01)
    return "released"


@app.task(retries=0)
async def explode(ctx: Context, reason: str) -> None:
    raise Permanent(reason)


@app.task(retries=0)
async def review(ctx: Context, doc: str) -> object:
    """Awaits a decision (human in the loop); once resumed, returns it."""
    if not ctx.resumed:
        return AwaitInput({"publish": doc}, timeout=3600)
    return {"doc": doc, "decision": ctx.input}


@app.task(queue="metered", rate_limit="30/m", concurrency=2, retries=0)
async def metered(n: int) -> int:
    return n
'''


class Cli:
    """``python -m conveyor`` in ``cwd`` with ``$CONVEYOR_URL`` on a fresh SQLite file."""

    def __init__(self, cwd: Path, pool: WorkerProcesses) -> None:
        self.cwd = cwd
        self.url = f"sqlite:///{cwd}/conveyor.db"
        # The app module's directory first on PYTHONPATH (then the repository and the caller's)
        self.env = subprocess_env(path=[cwd], CONVEYOR_URL=self.url)
        self.pool = pool

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
        res = subprocess.run(
            [sys.executable, "-m", "conveyor", *args], cwd=self.cwd, env=self.env | (env or {}),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(f"conveyor {' '.join(args)} exited {res.returncode}: {res.stderr}")
        return res

    def enqueue(self, task: str, payload: dict[str, Any], *options: str) -> str:
        res = self("--app", "cliapp:app", "enqueue", task, "--payload", json.dumps(payload),
                   *options)  # fmt: skip
        return res.stdout.strip()

    def job(self, job_id: str) -> dict[str, Any]:
        return json.loads(self("status", job_id, "--json").stdout)

    def jobs(self, *filters: str) -> list[dict[str, Any]]:
        return json.loads(self("list", "--json", *filters).stdout)["jobs"]

    def worker(self, *args: str) -> WorkerProcess:
        """``conveyor worker cliapp:app *args`` (``worker_process`` for other arguments)."""
        return self.worker_process("cliapp:app", *args)

    def worker_process(self, *args: str) -> WorkerProcess:
        """``conveyor worker *args`` here, with this environment."""
        return self.pool.conveyor(*args, cwd=self.cwd, env=self.env)


@pytest.fixture
def cli(tmp_path: Path, worker_processes: WorkerProcesses) -> Cli:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    return Cli(tmp_path, worker_processes)
