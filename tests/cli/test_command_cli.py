"""`conveyor worker --command NAME='CMD'` (no Python app) and `conveyor enqueue` without --app."""

from __future__ import annotations

import json
import sys

from tests.cli.conftest import Cli
from tests.conftest import eventually_sync

PROGRAM = """
import json, sys
payload = json.load(sys.stdin)
print("PROGRESS: 50 halfway", flush=True)
print(json.dumps({"doubled": payload["n"] * 2}))
"""


def test_a_command_task_without_any_python_app(cli: Cli) -> None:
    # Given a program, and a worker that runs it as task `double` (no app module at all)
    (cli.cwd / "double.py").write_text(PROGRAM)
    w = cli.worker_process("--command", f"double={sys.executable} double.py",
                           "--command", "shout=echo {word}")  # fmt: skip
    w.wait_for_output("started")
    # When jobs are enqueued from the CLI, without --app
    job = cli("enqueue", "double", "--payload", '{"n": 21}').stdout.strip()
    # Then the program's JSON last line is the result, and its progress was recorded
    res = cli("wait", job, "--timeout", "20")
    assert json.loads(res.stdout) == {"doubled": 42}
    assert cli.job(job)["progress"]["percent"] == 50
    # And a payload missing a field of the command line is refused (the worker publishes them)
    res = cli("enqueue", "shout", "--payload", '{"other": 1}', check=False)
    assert res.returncode == 2 and "'payload.word'" in res.stderr, res.stderr
    # And sent anyway, it fails that job, clearly, for good
    bad = cli("enqueue", "shout", "--payload", '{"other": 1}', "--unchecked").stdout.strip()
    assert cli("wait", bad, "--timeout", "20", check=False).returncode == 1
    failed = cli.job(bad)
    assert failed["attempt"] == 1 and "'word'" in failed["error"]["message"]
    eventually_sync(lambda: "failed" in w.output(), what="the worker to log the failure")


def test_worker_command_mistakes_exit_2(cli: Cli) -> None:
    for args, needle in [
        ((), "--command"),
        (("--command", "nameonly"), "NAME="),
        (("--command", "x=echo {a:>3}"), "placeholders"),
        (("--command", "x='unclosed"), "quotation"),
    ]:
        res = cli("worker", *args, check=False)
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_enqueue_unchecked_without_app_goes_to_the_given_queue(cli: Cli) -> None:
    job = cli("enqueue", "elsewhere", "--payload", '{"a": 1}', "--queue", "remote", "--unchecked")
    stored = cli.job(job.stdout.strip())
    assert stored["queue"] == "remote" and stored["payload"] == {"a": 1}
    res = cli("enqueue", "elsewhere", "--payload", "[1]", "--unchecked", check=False)
    assert res.returncode == 2 and "JSON object" in res.stderr
