"""`conveyor worker` and `conveyor wait` as real subprocesses: running jobs and signals."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys

from tests.conftest import eventually_sync

from .conftest import Cli


def test_worker_runs_jobs_wait_prints_results_and_sigterm_exits_0(cli: Cli) -> None:
    # Given three jobs, one of which fails for good
    ok = [cli.enqueue("enrich", {"record_id": f"r{i}", "steps": 3}) for i in range(2)]
    bad = cli.enqueue("explode", {"reason": "bad record"})
    # When a worker runs
    worker = cli.worker("--concurrency", "4")
    # Then wait prints each result and exits 0, or exits 1 naming the error
    for i, job_id in enumerate(ok):
        res = cli("wait", job_id, "--timeout", "20")
        assert json.loads(res.stdout) == {"record_id": f"r{i}", "steps": 3}
    res = cli("wait", bad, "--timeout", "20", check=False)
    assert res.returncode == 1 and "Permanent: bad record" in res.stderr, res.stderr
    done = cli.job(ok[0])
    assert done["status"] == "completed" and done["progress"]["percent"] == 100
    assert done["progress"]["stage"] == "enrich" and done["attempt"] == 1
    # And the banner names the queues and concurrency
    out = worker.output()
    assert "started" in out and "queues=default,slow" in out and "concurrency=4" in out
    # When it gets SIGTERM, it exits 0
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert "stopped after 3 jobs" in worker.output()
    assert json.loads(cli("stats", "--json").stdout)["default"]["workers"] == 0


def test_sigterm_lets_the_active_job_finish(cli: Cli) -> None:
    # Given a worker running a job that lasts until its gate file appears
    gate = cli.cwd / "gate"
    job_id = cli.enqueue("hold", {"gate": str(gate)})
    worker = cli.worker("--queues", "slow")
    eventually_sync(lambda: cli.job(job_id)["status"] == "active", what="the job to start")
    # When the worker gets SIGTERM, it stops claiming but keeps the job running
    worker.send_signal(signal.SIGTERM)
    worker.wait_for_output("SIGTERM: stopping")
    assert worker.poll() is None
    later = cli.enqueue("hold", {"gate": str(gate)})
    # Then once the job ends the worker exits 0, and the job enqueued meanwhile was not claimed
    gate.touch()
    assert worker.wait(timeout=20) == 0
    assert cli.job(job_id)["status"] == "completed"
    assert cli.job(later)["status"] == "queued"


def test_a_second_signal_returns_the_active_job_to_the_queue(cli: Cli) -> None:
    # Given a worker running a job that never ends by itself
    job_id = cli.enqueue("hold", {"gate": str(cli.cwd / "never")})
    worker = cli.worker("--shutdown-grace", "60")
    eventually_sync(lambda: cli.job(job_id)["status"] == "active", what="the job to start")
    # When it gets SIGINT twice
    worker.send_signal(signal.SIGINT)
    worker.wait_for_output("SIGINT: stopping")
    worker.send_signal(signal.SIGINT)
    # Then it exits 0 without waiting out the grace, and the job is queued again, uncharged
    assert worker.wait(timeout=20) == 0
    job = cli.job(job_id)
    assert job["status"] == "queued" and job["attempt"] == 0


def test_shutdown_grace_over_returns_the_job_and_exits_0(cli: Cli) -> None:
    # Given a worker with a short grace running a job that never ends by itself
    job_id = cli.enqueue("hold", {"gate": str(cli.cwd / "never")})
    worker = cli.worker("--shutdown-grace", "0.2")
    eventually_sync(lambda: cli.job(job_id)["status"] == "active", what="the job to start")
    # When it gets SIGTERM, then after the grace the job goes back to the queue and it exits 0
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert cli.job(job_id)["status"] == "queued"


def test_bad_worker_arguments_are_clear_errors(cli: Cli) -> None:
    cases = [
        (["missing:app"], "cannot import 'missing'"),
        (["cliapp:enrich"], "not a conveyor.Conveyor"),
        (["cliapp:app", "--queues", ","], "--queues"),
    ]
    for args, needle in cases:
        res = cli("worker", *args, check=False, timeout=20)
        assert res.returncode == 2 and needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    res = cli("worker", "cliapp:app", "--concurrency", "0", check=False)
    assert res.returncode == 2 and "--concurrency" in res.stderr


def _on_a_terminal(cli: Cli, *args: str) -> tuple[int, str, str]:
    """Run ``conveyor`` with stderr on a pseudo-terminal (where `wait` draws its progress bar);
    return (exit status, stdout, everything drawn on the terminal)."""
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args], cwd=cli.cwd,
        env=cli.env | {"COLUMNS": "120", "TERM": "xterm"}, stdout=subprocess.PIPE, stderr=side,
        text=True,
    )  # fmt: skip
    os.close(side)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out, drawn.decode(errors="replace")


def test_wait_draws_the_bar_to_100_percent_when_the_job_completes(cli: Cli) -> None:
    # Given a job that reported 50% and then completed
    gate = cli.cwd / "gate"
    job_id = cli.enqueue("hold", {"gate": str(gate)})
    cli.worker("--queues", "slow")
    eventually_sync(lambda: cli.job(job_id)["progress"]["percent"] == 50, what="the job at 50%")
    gate.touch()
    eventually_sync(lambda: cli.job(job_id)["status"] == "completed", what="the job to complete")
    # When `conveyor wait` follows it on a terminal
    status, out, drawn = _on_a_terminal(cli, "wait", job_id, "--timeout", "20")
    # Then the bar ends full, and the result is printed
    assert status == 0 and json.loads(out) == "released"
    assert "100%" in drawn, drawn
    assert "50%" not in drawn, drawn
