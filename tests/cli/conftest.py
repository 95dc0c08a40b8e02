"""Fixtures for the command-line tests: a small app module and a SQLite file in ``tmp_path``,
and `Cli`, which runs ``python -m conveyor`` as a real subprocess against them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually_sync

APP_MODULE = '''
import asyncio
from pathlib import Path

from conveyor import Context, Conveyor, Permanent

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


@app.task(queue="metered", rate_limit="30/m", concurrency=2, retries=0)
async def metered(n: int) -> int:
    return n
'''


class Cli:
    """``python -m conveyor`` in ``cwd`` with ``$CONVEYOR_URL`` on a fresh SQLite file."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.url = f"sqlite:///{cwd}/conveyor.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        # The app module's directory first; the caller's PYTHONPATH (say, a source tree to
        # test instead of the installed package) after it.
        path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH")) if p)
        self.env = env | {"CONVEYOR_URL": self.url, "PYTHONPATH": path}
        self.procs: list[subprocess.Popen[str]] = []

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

    def worker(self, *options: str) -> Worker:
        log = self.cwd / f"worker-{len(self.procs)}.log"
        with log.open("w") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "worker", "cliapp:app", *options],
                cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=f, text=True,
            )  # fmt: skip
        self.procs.append(proc)
        return Worker(proc, log)


class Worker:
    """A ``conveyor worker`` subprocess; its stderr goes to ``log``."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_output(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.output():
                pytest.fail(f"worker exited {self.proc.returncode}: {self.output()}")
            return text in self.output()

        eventually_sync(seen, timeout, what=f"{text!r} in the worker's stderr")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    c = Cli(tmp_path)
    yield c
    for p in c.procs:  # a test that failed midway must not leave a worker behind
        if p.poll() is None:
            p.kill()
            p.wait()
