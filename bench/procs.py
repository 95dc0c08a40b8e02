"""The bench's worker process, as the driver starts, profiles, stops and checks it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TMP = Path(os.environ.get("BENCH_TMP", "."))
PYSPY = os.environ.get("BENCH_PYSPY", "")  # output prefix: profile the worker with py-spy
PYSPY_FLAGS = os.environ.get("BENCH_PYSPY_FLAGS", "").split()  # e.g. --native --idle


class WorkerProc:
    """One worker process in its own session (so a killed driver's worker can be reaped)."""

    def __init__(self, concurrency: int, label: str, ready: str = "") -> None:
        self.log_path = TMP / "logs" / f"{label}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [sys.executable, "-m", "bench.worker", "--concurrency", str(concurrency)]
        if ready:
            argv += ["--ready", ready]
        self.argv = argv
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=str(ROOT), env=env, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        pid_dir = TMP / "pids"
        pid_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file = pid_dir / str(self.proc.pid)
        self.pid_file.write_text(label)
        self.spy: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def profile(self, label: str) -> None:
        """Attach py-spy (sampling from outside, --nonblocking) until the worker exits."""
        if not PYSPY or self.spy is not None:
            return
        spy = Path(sys.executable).parent / "py-spy"
        out = f"{PYSPY}-{label}"
        # --native (C frames, e.g. hiredis) cannot be combined with --nonblocking: py-spy then
        # pauses the worker for each sample.
        block = [] if "--native" in PYSPY_FLAGS else ["--nonblocking"]
        self.spy = subprocess.Popen(
            [str(spy), "record", "--pid", str(self.pid), "--rate", "200", *block,
             "--threads", "--format", "raw", "--output", out + ".txt", *PYSPY_FLAGS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, grace: float = 3.0) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.spy is not None:
            try:
                self.spy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.spy.kill()
        self.log.close()
        self.pid_file.unlink(missing_ok=True)

    def text(self) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""


ERROR_PAT = re.compile(r"Traceback|ERROR|CRITICAL|database is locked|OperationalError|Exception")


def scan_log(w: WorkerProc, res: dict) -> None:
    lines = [ln for ln in w.text().splitlines() if ERROR_PAT.search(ln)]
    lines = [ln for ln in lines if "CancelledError" not in ln and "KeyboardInterrupt" not in ln]
    res["worker_error_lines"] = len(lines)
    if lines:
        res["note"] += f"worker log has {len(lines)} error line(s), first: {lines[0][:200]!r}; "
