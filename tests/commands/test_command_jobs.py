"""Command jobs on every backend, with real processes: progress lines (malformed ones too), the
stdin payload round trip, bounded output (worker RSS measured), timeouts and cancellation
that kill a process group with its grandchildren, a segfault, a missing program, resource
limits, the environment allow-list, and a worker killed -9 or stopped mid-command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from conveyor import ConfigurationError, Conveyor, JobState, Task, ValidationError
from conveyor.command import parse_progress
from tests.conftest import events_of, eventually, finished
from tests.workers import WorkerProcess, WorkerProcesses

ROOT = Path(__file__).resolve().parents[2]


# The repository (for ``tests.*``), then the caller's PYTHONPATH (a source tree under test).
PYTHONPATH = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


PY = [sys.executable, "-m", "tests.commands.scripts"]
ENV = ["PATH", "PYTHONPATH"]


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pids(pidfile: Path) -> list[int] | None:
    if not pidfile.exists() or not pidfile.read_text().endswith("\n"):
        return None
    return [int(p) for p in pidfile.read_text().split()]


async def _done(app: Conveyor, job_id: str):  # type: ignore[no-untyped-def]
    return await eventually(lambda: finished(app, job_id), timeout=20, what=f"job {job_id}")


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PROGRESS: 25", (25.0, None)),
        (b"PROGRESS: 40 transcribing audio", (40.0, "transcribing audio")),
        (b"PROGRESS:7.5% almost", (7.5, "almost")),
        (b"PROGRESS: 100\r", (100.0, None)),
        (b"PROGRESS: banana", None),
        (b"PROGRESS: 101", None),
        (b"PROGRESS: -1", None),
        (b"PROGRESS: nan", None),
        (b"PROGRESS:", None),
        (b"progress: 20", None),
    ],
)
def test_progress_lines(line: bytes, expected: tuple[float, str | None] | None) -> None:
    assert parse_progress(line) == expected


def test_bad_command_definitions_are_named(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="non-empty"):
        app.command("empty", [])
    with pytest.raises(ConfigurationError, match="placeholders"):
        app.command("fmt", "echo {n:>3}")
    with pytest.raises(ConfigurationError, match="output_limit"):
        app.command("small", "echo", output_limit=10)


# -- running -----------------------------------------------------------------------------------


async def test_progress_result_and_stdin_round_trip(app: Conveyor) -> None:
    # Given a program that reads its payload from stdin, prints progress lines (some malformed)
    # and prints its result as the last line
    app.command("prog", [*PY, "progress"], cwd=str(ROOT), env=ENV)
    payload = {"doc": "a.pdf", "pages": [1, 2], "nested": {"ok": True}, "text": "é ✓"}
    job = await app.enqueue("prog", payload)
    async with app.worker(concurrency=2):
        done = await _done(app, job.id)
    # Then the payload came back unchanged as the JSON result
    assert done.status is JobState.COMPLETED, done.error
    assert done.result == {"echo": payload}
    # And only the well-formed progress lines became progress, in order
    seen = [e.data["percent"] for e in await events_of(app, job.id) if e.type.value == "progress"]
    assert seen[-1] == 90.0 and set(seen) <= {10.0, 55.5, 90.0}
    assert done.progress.percent == 90.0


async def test_placeholders_and_shell_quoting(app: Conveyor, tmp_path: Path) -> None:
    # Given a shell command with a placeholder, and a payload trying to inject a command
    marker = tmp_path / "pwned"
    app.command("say", "echo {text}", shell=True, stdin=False)
    job = await app.enqueue("say", {"text": f"hi; touch {marker}"})
    async with app.worker():
        done = await _done(app, job.id)
    # Then the value is one quoted argument: printed, never run
    assert done.result["stdout"] == f"hi; touch {marker}\n"
    assert not marker.exists()
    # And a missing or non-scalar placeholder field is refused at enqueue
    with pytest.raises(ValidationError, match=r"payload\.text"):
        await app.enqueue("say", {})
    with pytest.raises(ValidationError, match="string or a number"):
        await app.enqueue("say", {"text": ["a"]})


async def test_failures_name_exit_code_signal_and_missing_program(app: Conveyor) -> None:
    # Given a failing program, a segfaulting one, a missing one, and a good one behind them
    app.command("fails", [sys.executable, "-c", "import sys; print('bad input', file=sys.stderr);"
                          " sys.exit(3)"], retries=0)  # fmt: skip
    app.command("segv", [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], retries=1,
                backoff_initial=0.01)  # fmt: skip
    app.command("missing", "/nonexistent/bin/tool --flag", retries=5)
    app.command("fine", "true", stdin=False)
    jobs = [await app.enqueue(n) for n in ("fails", "segv", "missing", "fine")]
    async with app.worker(concurrency=1):
        fails, segv, missing, fine = [await _done(app, j.id) for j in jobs]
    # Then each failure says why, with the exit code / signal and the stderr tail
    assert fails.status is JobState.FAILED
    assert fails.error["exit_code"] == 3
    assert fails.error["message"] == "exit code 3: bad input"
    # A segfault fails only that job, and is retried as configured
    assert segv.status is JobState.FAILED and segv.attempt == 2
    assert segv.error["signal"] == signal.SIGSEGV and "SIGSEGV" in segv.error["message"]
    # A program that does not exist fails at once, without burning retries
    assert missing.status is JobState.FAILED and missing.attempt == 1
    assert missing.error["type"] == "CommandNotStarted"
    assert "/nonexistent/bin/tool" in missing.error["message"]
    # And the worker kept going
    assert fine.status is JobState.COMPLETED


async def test_long_stderr_is_cut_to_1000_characters_keeping_the_end(app: Conveyor) -> None:
    app.command("noisy", [sys.executable, "-c", "import sys; sys.stderr.write('x' * 5000 + "
                          "'THE END'); sys.exit(2)"], retries=0)  # fmt: skip
    job = await app.enqueue("noisy")
    async with app.worker():
        done = await _done(app, job.id)
    msg = done.error["message"]
    assert len(msg) <= 1000 and msg.startswith("exit code 2: ") and msg.endswith("THE END")


async def test_timeout_kills_the_process_and_its_grandchildren(
    app: Conveyor, tmp_path: Path
) -> None:
    # Given a program that starts a grandchild and both sleep, under a 1 s timeout
    pidfile = tmp_path / "pids"
    app.command("family", [*PY, "family", "{pidfile}"], cwd=str(ROOT), env=ENV, stdin=False,
                timeout=1.0, retries=0, kill_grace=0.5)  # fmt: skip
    job = await app.enqueue("family", {"pidfile": str(pidfile)})
    async with app.worker():
        pids = await eventually(lambda: _pids(pidfile), timeout=10, what="the pid file")
        done = await _done(app, job.id)
    # Then the attempt timed out and no process of the group survives
    assert done.status is JobState.FAILED and done.error["type"] == "JobTimeout"
    await eventually(lambda: not any(_alive(p) for p in pids), timeout=5, what="pids gone")


async def test_cancel_kills_a_running_command(app: Conveyor, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    app.command("family", [*PY, "family", "{pidfile}"], cwd=str(ROOT), env=ENV, stdin=False,
                kill_grace=0.5)  # fmt: skip
    job = await app.enqueue("family", {"pidfile": str(pidfile)})
    async with app.worker():
        pids = await eventually(lambda: _pids(pidfile), timeout=10, what="the pid file")
        # When the job is cancelled while it runs
        await app.cancel(job.id)
        # Then the program and its grandchild are gone within moments
        await eventually(lambda: not any(_alive(p) for p in pids), timeout=5, what="pids gone")
    assert (await app.get(job.id)).status is JobState.CANCELLED


async def test_environment_is_an_allow_list(app: Conveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a secret in the worker's environment
    monkeypatch.setenv("CONVEYOR_TEST_SECRET", "hunter2")
    app.command("env", [*PY, "env"], cwd=str(ROOT), env=ENV, extra_env={"EXTRA": "1"})
    job = await app.enqueue("env")
    async with app.worker():
        done = await _done(app, job.id)
    # Then the program sees only the allowed variables, the extras and its job id
    assert done.result["CONVEYOR_TEST_SECRET"] is None
    assert done.result["EXTRA"] == "1" and done.result["PATH"]
    assert done.result["CONVEYOR_JOB_ID"] == job.id


async def test_resource_limits(app: Conveyor) -> None:
    # Given a program allocating 400 MB under a 200 MB limit, and one spinning under 1 s of CPU
    app.command("hog", [*PY, "hog"], cwd=str(ROOT), env=ENV, memory_limit=200 * 1024 * 1024,
                retries=0)  # fmt: skip
    app.command("spin", [*PY, "spin"], cwd=str(ROOT), env=ENV, cpu_limit=1, retries=0)
    hog, spin = await app.enqueue("hog"), await app.enqueue("spin")
    async with app.worker(concurrency=2):
        hog, spin = await _done(app, hog.id), await _done(app, spin.id)
    # Then the first fails on its allocation and the second is stopped by the kernel
    assert hog.status is JobState.FAILED and "MemoryError" in hog.error["message"]
    assert spin.status is JobState.FAILED
    assert spin.error.get("signal") in (signal.SIGXCPU, signal.SIGKILL)


# -- worker processes --------------------------------------------------------------------------


@pytest.fixture
def worker(backend_url: str, worker_processes: WorkerProcesses) -> WorkerProcess:
    return worker_processes.conveyor(
        "tests.commands.cmdapp:app", "--concurrency", "2", "--shutdown-grace", "0.5",
        env={"CONVEYOR_URL": backend_url, "CMD_CWD": str(ROOT)},
    )  # fmt: skip


@pytest.fixture
async def producer(backend_url: str) -> Conveyor:
    from tests.commands.cmdapp import app as cmd_app

    app = Conveyor(backend_url)
    for name, t in cmd_app.tasks.items():
        nt = Task(app, t.fn, name, t.options)
        nt.spec = t.spec
        app.tasks[name] = nt
    yield app
    await app.close()


async def test_50_mb_of_output_keeps_worker_memory_bounded(
    producer: Conveyor, worker: WorkerProcess
) -> None:
    # Given a worker process, idle, and its memory then
    proc = psutil.Process(worker.pid)
    warm = await producer.enqueue("flood")  # the first job loads code: measure after it
    await _done(producer, warm.id)
    base = proc.memory_info().rss
    # When a command writes 50 MB to stdout (sampling the worker's RSS as it runs)
    job = await producer.enqueue("flood")
    peak = base
    while not (await producer.get(job.id)).status.is_final:
        peak = max(peak, proc.memory_info().rss)
        await asyncio.sleep(0.01)
    done = await producer.get(job.id)
    # Then it completed with its result line, and the worker grew by a few MB at most
    assert done.status is JobState.COMPLETED and done.result == {"done": True}
    growth_mb = (peak - base) / 2**20
    print(f"worker RSS {base / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB (+{growth_mb:.1f} MB)")
    assert growth_mb < 20


async def test_worker_killed_9_leaves_no_orphan(
    producer: Conveyor, worker: WorkerProcess, tmp_path: Path
) -> None:
    # Given a command with a grandchild running under a worker process
    pidfile = tmp_path / "pids"
    await producer.enqueue("family", {"pidfile": str(pidfile)})
    pids = await eventually(lambda: _pids(pidfile), timeout=20, what="the pid file")
    # When the worker is killed -9 (it cannot clean up)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    # Then the supervisor, told by the kernel, kills the whole group
    await eventually(lambda: not any(_alive(p) for p in pids), timeout=10, what="pids gone")


async def test_worker_shutdown_terminates_its_commands(
    producer: Conveyor, worker: WorkerProcess, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    job = await producer.enqueue("family", {"pidfile": str(pidfile)})
    pids = await eventually(lambda: _pids(pidfile), timeout=20, what="the pid file")
    # When the worker gets SIGTERM with a 0.5 s grace
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    # Then the command and its grandchild are gone and the job is back in the queue
    await eventually(lambda: not any(_alive(p) for p in pids), timeout=10, what="pids gone")
    assert (await producer.get(job.id)).status is JobState.QUEUED


async def test_shell_placeholders_are_data_even_inside_quotes(
    app: Conveyor, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    app.command("dq", 'echo "[{x}]"', shell=True, stdin=False)
    app.command("sq", "echo '[{x}]'", shell=True, stdin=False)
    evil = f"$(touch {marker})`touch {marker}`"
    jobs = [await app.enqueue("dq", {"x": evil}), await app.enqueue("sq", {"x": evil})]
    async with app.worker():
        dq, sq = [await _done(app, j.id) for j in jobs]
    # Then nothing ran: inside double quotes the value is printed as is, inside single quotes
    # the placeholder stays literal (the shell never sees the value as code)
    assert not marker.exists()
    assert dq.result["stdout"] == f"[{evil}]\n"
    assert dq.status is sq.status is JobState.COMPLETED


async def test_secrets_and_big_arguments_stay_off_the_command_line(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a secret passed to the program, and two 70 KB arguments
    monkeypatch.setenv("CONVEYOR_TEST_SECRET", "hunter2-in-env")
    app.command("peek", [*PY, "env"], cwd=str(ROOT), env=[*ENV, "CONVEYOR_TEST_SECRET"])
    app.command("big", ["printf", "%.3s", "{a}", "{b}"], stdin=False)
    job = await app.enqueue("peek")
    big = await app.enqueue("big", {"a": "x" * 70_000, "b": "y" * 70_000})
    seen: list[str] = []
    async with app.worker(concurrency=2):
        while not (await app.get(job.id)).status.is_final:
            for p in psutil.process_iter(["cmdline"]):
                seen += [a for a in p.info["cmdline"] or [] if "hunter2" in a]
            await asyncio.sleep(0.01)
        done, big_done = await _done(app, job.id), await _done(app, big.id)
    # Then the program got the secret, no process list ever showed it, and big argv works
    assert done.result["CONVEYOR_TEST_SECRET"] == "hunter2-in-env"
    assert seen == []
    assert big_done.status is JobState.COMPLETED, big_done.error
    assert big_done.result["stdout"] == "xxxyyy"


async def test_a_process_escaping_the_group_is_killed_and_does_not_hold_the_job(
    app: Conveyor, tmp_path: Path
) -> None:
    pidfile = tmp_path / "escaped"
    # (the command waits until the escaped process wrote its pid: a fixed sleep lost that race
    # on a loaded machine)
    app.command("escape", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & "
                f"until [ -s {pidfile} ]; do sleep 0.01; done; echo done",
                shell=True, stdin=False)  # fmt: skip
    job = await app.enqueue("escape")
    async with app.worker():
        done = await _done(app, job.id)
    assert done.status is JobState.COMPLETED and done.result["stdout"] == "done\n"
    pid = int(pidfile.read_text())
    await eventually(lambda: not _alive(pid), timeout=5, what="the escaped process gone")


async def test_a_last_progress_line_without_newline_counts(app: Conveyor) -> None:
    app.command("tail", ["printf", "PROGRESS: 42 almost"], stdin=False)
    job = await app.enqueue("tail")
    async with app.worker():
        done = await _done(app, job.id)
    assert done.progress.percent == 42.0 and done.progress.message == "almost"
