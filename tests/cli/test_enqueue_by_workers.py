"""`conveyor enqueue` without --app takes the live workers' word for where a task runs and what
its payload is; `conveyor wait` says when no live worker will run a job."""

from __future__ import annotations

import json

from .conftest import Cli


def test_enqueue_without_app_routes_and_checks_as_the_live_workers_say(cli: Cli) -> None:
    # Given a worker of the app (enrich on 'default', hold on 'slow') and no app here
    worker = cli.worker("--queues", "default,slow")
    worker.wait_for_output("started")
    # When a job of 'hold' is enqueued without --app and without --queue
    job = cli("enqueue", "hold", "--payload", '{"gate": "never"}').stdout.strip()
    # Then it went to the queue the workers run 'hold' on
    assert cli.job(job)["queue"] == "slow"
    # And payloads the task would refuse are refused here, naming the field; nothing is stored
    for payload, needle in [
        ("{}", "missing required field 'payload.record_id'"),
        ('{"record_id": "r", "bogus": 1}', "unknown field 'payload.bogus'"),
        ('{"record_id": 5}', "invalid 'payload.record_id': expected string"),
    ]:
        res = cli("enqueue", "enrich", "--payload", payload, check=False)
        assert res.returncode == 2 and needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    # And a --queue that contradicts the workers is refused
    res = cli("enqueue", "hold", "--payload", '{"gate": "g"}', "--queue", "default", check=False)
    assert res.returncode == 2 and "runs on queue 'slow'" in res.stderr, res.stderr
    # And a task no live worker runs is refused, saying what they do run
    res = cli("enqueue", "nosuch", "--payload", "{}", check=False)
    assert res.returncode == 2 and "no live worker runs task 'nosuch'" in res.stderr
    assert "enrich" in res.stderr and "--unchecked" in res.stderr
    assert [j["id"] for j in cli.jobs()] == [job]


def test_a_task_refused_without_a_worker_can_be_sent_unchecked(cli: Cli) -> None:
    # Given no live worker at all
    res = cli("enqueue", "enrich", "--payload", '{"record_id": "r"}', check=False)
    assert res.returncode == 2 and "no worker is live" in res.stderr, res.stderr
    # When the job is sent --unchecked
    job = cli("enqueue", "later", "--payload", '{"a": 1}', "--unchecked", "--queue", "q2")
    # Then it is stored as given
    stored = cli.job(job.stdout.strip())
    assert (stored["queue"], stored["payload"], stored["status"]) == ("q2", {"a": 1}, "queued")
    # And --unchecked is refused with --app (the app checks)
    res = cli("--app", "cliapp:app", "enqueue", "enrich", "--unchecked", check=False)
    assert res.returncode == 2 and "--unchecked" in res.stderr


def test_wait_says_when_no_live_worker_serves_the_queue(cli: Cli) -> None:
    # Given a job on a queue no live worker serves, and a live worker elsewhere
    worker = cli.worker("--queues", "slow")
    worker.wait_for_output("started")
    job = cli("enqueue", "enrich", "--payload", '{"record_id": "r"}', "--unchecked",
              "--queue", "nowhere").stdout.strip()  # fmt: skip
    # When someone waits for it
    res = cli("wait", job, "--timeout", "0.5", check=False)
    # Then wait says why it may never run, and times out as usual
    assert res.returncode == 3, res.stderr
    assert "no live worker serves queue 'nowhere'" in res.stderr, res.stderr
    # And a job on a served queue whose task the workers lack is named as such
    other = cli("enqueue", "enrich", "--payload", '{"record_id": "r"}', "--unchecked",
                "--queue", "slow", "--delay", "60").stdout.strip()  # fmt: skip
    res = cli("wait", other, "--timeout", "0.5", "--json", check=False)
    assert res.returncode == 3 and "no handler for task 'enrich'" in res.stderr, res.stderr
    assert json.loads(res.stdout)["status"] == "scheduled"
