"""``conveyor worker --queues Q:N,...``: parsing, and a real worker process with queue slots."""

from __future__ import annotations

import json
import signal

import pytest

from conveyor.cli import CliError, parse_queues

from .conftest import Cli

SLOT_TASKS = """

@app.task(queue="critical", retries=0)
async def urgent(n: int) -> int:
    return n


@app.task(queue="low", retries=0)
async def bulk(n: int) -> int:
    return n
"""


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("a,b", ["a", "b"]),  # no counts: a list, every queue on the shared pool
        ("critical:5,high:3,normal:2,low:1", {"critical": 5, "high": 3, "normal": 2, "low": 1}),
        ("critical:5, default", {"critical": 5, "default": None}),  # mixed
        ("tenant:acme:3,tenant:beta", {"tenant:acme": 3, "tenant:beta": None}),  # ':' in names
        ("tenant:acme", ["tenant:acme"]),  # only a trailing :<digits> is a count
    ],
)
def test_queues_option_parses_trailing_slot_counts(value: str, parsed: object) -> None:
    assert parse_queues(value) == parsed


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("low:0", "queue 'low' needs at least 1 slot"),
        ("low:1,low", "queue 'low' is listed twice"),
        (" , ", "--queues is empty"),
    ],
)
def test_queues_option_refuses_bad_counts(value: str, needle: str) -> None:
    with pytest.raises(CliError, match=needle):
        parse_queues(value)


def test_worker_runs_queues_with_their_own_slots(cli: Cli) -> None:
    # Given an app with critical and low queues, and a job on each
    with (cli.cwd / "cliapp.py").open("a") as f:
        f.write(SLOT_TASKS)
    ids = [cli.enqueue("urgent", {"n": 1}), cli.enqueue("bulk", {"n": 2})]
    # When a worker runs with dedicated slots for both and the shared pool for default
    worker = cli.worker("--queues", "critical:2,low:1,default", "--concurrency", "3")
    # Then both jobs complete
    for n, job_id in enumerate(ids, 1):
        assert json.loads(cli("wait", job_id, "--timeout", "20").stdout) == n
    # And the banner shows the slots and the total capacity, which stats report too
    worker.wait_for_output("started")
    out = worker.output()
    assert "queues=critical:2,low:1,default concurrency=3 capacity=6" in out, out
    assert json.loads(cli("stats", "--json").stdout)["critical"]["concurrency"] == 6
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_bad_queue_slots_exit_2_with_one_line_naming_the_problem(cli: Cli) -> None:
    with (cli.cwd / "cliapp.py").open("a") as f:
        f.write(SLOT_TASKS)
    cases = [
        ("critical:2,low:0", "queue 'low' needs at least 1 slot"),
        # "low:x" could be a queue name (':' is allowed), but the app has "low" and no "low:x"
        ("critical:2,low:x", "'x' is not a slot count"),
        ("critical:2,critical", "queue 'critical' is listed twice"),
    ]
    for value, needle in cases:
        res = cli("worker", "cliapp:app", "--queues", value, check=False, timeout=20)
        assert res.returncode == 2, (value, res.stderr)
        assert needle in res.stderr and "--queues" in res.stderr, (value, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
