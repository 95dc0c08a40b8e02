"""Worker processes for the tests that need real ones (acceptance, processes, commands, CLI): one
harness, used through the `worker_processes` fixture (``tests/conftest.py``).

Each process runs in its own session (a signal reaches only it; a kill takes its whole group),
with the caller's environment minus ``CONVEYOR_*`` (the test says what it wants) and a
``PYTHONPATH`` of the test's extra paths, the repository (for ``tests.*``) and the caller's own
``PYTHONPATH`` (a source tree under test). Its stdout and stderr go to one file. At teardown every
process still running is killed, the ERROR lines of each output are reported to the error watch
(``tests/guards.py``), and the tail of each output is printed (pytest shows it when the test
failed).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import eventually_sync
from tests.guards import report_problem

ROOT = Path(__file__).resolve().parents[1]

# A log line at ERROR or CRITICAL in the formats of `conveyor worker` ("<time> ERROR name: msg")
# and of tests/acceptance/worker_main.py ("<time> <pid> name ERROR msg"), a JSON record of
# `conveyor worker --log-format json` at those levels, or asyncio's own
# report of a task nobody awaited.
_ERROR_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,.]+ (?:\d+ \S+ )?(?:ERROR|CRITICAL)\b|Task exception was never retrieved"
    r'|^\{"ts":"[^"]*","level":"(?:ERROR|CRITICAL)"'  # --log-format json
)
_LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\d [\d:,.]+ |^\{"ts":')


def subprocess_env(*, path: Iterable[str | Path] = (), **extra: str) -> dict[str, str]:
    """The environment of a test subprocess: see the module docstring."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    parts = [*map(str, path), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env | extra


class WorkerProcess:
    """One worker process; its output (stdout and stderr) goes to ``log``."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (blocking; raises `subprocess.TimeoutExpired`)."""
        return self.popen.wait(timeout)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code; fails the test if it is still running after ``timeout`` seconds."""
        try:
            return await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running {timeout}s later:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL its whole process group, and reap it: when this returns, the process is gone."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for_output(self, text: str, timeout: float = 15.0) -> None:
        """Block until ``text`` appears in the output; fail if the process exits first."""

        def seen() -> bool:
            if self.poll() is not None and text not in self.output():
                pytest.fail(f"worker exited {self.returncode}:\n{self.tail()}")
            return text in self.output()

        eventually_sync(seen, timeout, what=f"{text!r} in the worker's output")

    def error_lines(self) -> list[str]:
        """Each ERROR record of the output, with the lines that follow it (its traceback)."""
        found: list[list[str]] = []
        current: list[str] | None = None
        for line in self.output().splitlines():
            if _ERROR_LINE.search(line):
                current = [line]
                found.append(current)
            elif current is not None and not _LOG_LINE.match(line):
                current.append(line)
            else:
                current = None
        return ["\n".join(lines) for lines in found]


class WorkerProcesses:
    """Starts worker processes for one test (see the module docstring)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[WorkerProcess] = []

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        path: Iterable[str | Path] = (),
    ) -> WorkerProcess:
        """Run ``python *args`` with ``env`` added to the base environment."""
        log = self.tmp / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=subprocess_env(path=path) | (env or {}),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = WorkerProcess(popen, log)
        self.procs.append(proc)
        return proc

    def conveyor(self, *args: str, **options: object) -> WorkerProcess:
        """Run ``conveyor worker *args`` (the command line users run)."""
        return self.start("-m", "conveyor", "worker", *args, **options)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            for problem in proc.error_lines():
                report_problem(f"worker process {proc.pid}: {problem}")
            # shown by pytest when the test failed
            print(f"--- worker {proc.pid} (exit {proc.returncode}) ---\n{proc.tail()}")
