"""`conveyor` producer and read commands as real subprocesses on a real SQLite file."""

from __future__ import annotations

import json

import pytest

from .conftest import Cli


def test_enqueue_prints_the_id_and_status_json_shows_the_stored_job(cli: Cli) -> None:
    # Given an app with an `enrich` task
    # When a job is enqueued with every option
    job_id = cli.enqueue("enrich", {"record_id": "r1"}, "--priority", "high", "--delay", "60",
                         "--tenant", "acme", "--idempotency-key", "r1")  # fmt: skip
    # Then its id is printed, and status --json shows what was stored
    job = cli.job(job_id)
    assert job["id"] == job_id
    assert (job["task"], job["queue"], job["status"]) == ("enrich", "default", "scheduled")
    assert (job["priority"], job["tenant"], job["idempotency_key"]) == (10, "acme", "r1")
    assert job["payload"] == {"record_id": "r1"}
    assert job["scheduled_for"] > job["created_at"] + 50
    # And the same idempotency key (of the same tenant) returns the same job, not a second one
    again = cli.enqueue(
        "enrich", {"record_id": "r1"}, "--idempotency-key", "r1", "--tenant", "acme"
    )
    assert again == job_id
    assert [j["id"] for j in cli.jobs()] == [job_id]
    # And the readable form names the fields
    table = cli("status", job_id).stdout
    assert job_id in table and "scheduled" in table and "acme" in table


def test_app_and_url_are_accepted_before_or_after_the_command_and_from_the_env(cli: Cli) -> None:
    # Given the app named after the command, or only in $CONVEYOR_APP
    after = cli("enqueue", "enrich", "--payload", '{"record_id": "a"}', "--app", "cliapp:app",
                "--json")  # fmt: skip
    from_env = cli("enqueue", "enrich", "--payload", '{"record_id": "b"}', "--priority", "7",
                   env={"CONVEYOR_APP": "cliapp:app"})  # fmt: skip
    # Then both jobs are stored (--json prints the whole job)
    first = json.loads(after.stdout)
    assert first["status"] == "queued" and first["priority"] == 5
    jobs = cli.jobs()
    assert {j["id"] for j in jobs} == {first["id"], from_env.stdout.strip()}
    assert {j["priority"] for j in jobs} == {5, 7}
    # And --url after the command points a read command at another store
    other = f"sqlite:///{cli.cwd}/other.db"
    assert json.loads(cli("list", "--json", "--url", other).stdout)["jobs"] == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["enrich", "--payload", '{"record_id": "r1", "typo": 1}'], "payload.typo"),
        (["enrich", "--payload", '{"steps": 1}'], "payload.record_id"),
        (["enrich", "--payload", '{"record_id": "r1", "steps": "many"}'], "payload.steps"),
        (["enrich", "--payload", "not json"], "--payload"),
        (["enrich", "--payload", "[1, 2]"], "payload"),
        (["enrich", "--payload", '{"record_id": "r1"}', "--priority", "extreme"], "priority"),
        (["enrich", "--payload", '{"record_id": "r1"}', "--priority", "101"], "priority"),
        (["enrich", "--payload", '{"record_id": "r1"}', "--priority", "-1"], "priority"),
        (["enrich", "--payload", '{"record_id": "r1"}', "--delay", "-1"], "delay"),
        (["enrich", "--payload", '{"record_id": "r1"}', "--max-attempts", "0"], "max_attempts"),
        (["nope", "--payload", "{}"], "unknown task 'nope'"),
    ],
)
def test_bad_enqueue_input_is_one_clear_line_and_stores_nothing(
    cli: Cli, args: list[str], needle: str
) -> None:
    # When the input is bad
    res = cli("--app", "cliapp:app", "enqueue", *args, check=False)
    # Then the exit is 2 with one line naming the problem, and nothing was stored
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    assert cli.jobs() == []


def test_configuration_mistakes_are_clear_errors(cli: Cli) -> None:
    bad_url = {"CONVEYOR_URL": "nope://"}
    cases = [
        # --queue is for tasks the app does not define
        (
            cli("--app", "cliapp:app", "enqueue", "enrich", "--queue", "x", check=False),
            "--queue",
            "without --app",
        ),
        # a malformed URL: given to a command, or read by the app module from $CONVEYOR_URL
        (cli("--url", "bogus://x", "list", check=False), "malformed backend URL", "bogus"),
        (
            cli("--app", "cliapp:app", "enqueue", "enrich", check=False, env=bad_url),
            "malformed backend URL",
            "nope",
        ),
        # an APP that does not import or is not a Conveyor
        (cli("--app", "missing:app", "enqueue", "enrich", check=False), "missing", "import"),
        (cli("--app", "cliapp:enrich", "enqueue", "enrich", check=False), "Task", "Conveyor"),
        (cli("--app", "cliapp:nothing", "enqueue", "enrich", check=False), "nothing", "attribute"),
    ]
    for res, *needles in cases:
        assert res.returncode == 2, res.stderr
        assert all(n in res.stderr for n in needles), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert cli.jobs() == []


def test_url_mistakes_are_one_line_and_exit_2(cli: Cli) -> None:
    # Given URLs with a newcomer's mistakes: one slash too few, a misspelled Redis option
    one_slash = "sqlite:/x.db"
    misspelled = "redis://127.0.0.1:1/0?prefx=a"
    cases = [
        (cli("--url", one_slash, "list", check=False), "malformed sqlite URL"),
        (cli("--url", misspelled, "list", check=False), "unknown redis URL option 'prefx'"),
        # the app module builds its Conveyor from $CONVEYOR_URL when the worker imports it
        (
            cli("worker", "cliapp:app", check=False, env={"CONVEYOR_URL": misspelled}),
            "unknown redis URL option 'prefx'",
        ),
    ]
    # Then each is one line naming the problem, exit status 2, and no file was opened
    for res, needle in cases:
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (cli.cwd / "x.db").exists()


def test_unknown_job_ids_are_clear_errors(cli: Cli) -> None:
    for command in ("status", "cancel", "retry", "wait"):
        res = cli(command, "no-such-job", check=False)
        assert res.returncode == 2, (command, res.stderr)
        assert "job 'no-such-job' not found" in res.stderr
        assert "Traceback" not in res.stderr


def test_list_filters_and_pages(cli: Cli) -> None:
    # Given three jobs of two tasks on two queues
    a = cli.enqueue("enrich", {"record_id": "a"})
    b = cli.enqueue("enrich", {"record_id": "b"})
    c = cli.enqueue("hold", {"gate": "g"})
    # Then list shows them newest first, filtered by task, queue and status
    assert [j["id"] for j in cli.jobs()] == [c, b, a]
    assert [j["id"] for j in cli.jobs("--task", "enrich")] == [b, a]
    assert [j["id"] for j in cli.jobs("--queue", "slow")] == [c]
    assert cli.jobs("--status", "failed") == []
    # And pages follow next_cursor
    page = json.loads(cli("list", "--json", "--limit", "2").stdout)
    assert [j["id"] for j in page["jobs"]] == [c, b]
    rest = json.loads(cli("list", "--json", "--limit", "2", "--cursor", page["next_cursor"]).stdout)
    assert [j["id"] for j in rest["jobs"]] == [a] and rest["next_cursor"] is None
    # And the table lists every id, with a hint for the next page
    table = cli("list", "--limit", "2").stdout
    assert c in table and b in table and a not in table and "--cursor" in table
    # And bad filters are clear errors
    for args, needle in ((["--status", "bogus"], "unknown status"), (["--limit", "0"], "limit")):
        res = cli("list", *args, check=False)
        assert res.returncode == 2 and needle in res.stderr, res.stderr


def test_stats_counts_jobs_per_queue(cli: Cli) -> None:
    # Given two queued jobs on `default` and one cancelled on `slow`
    cli.enqueue("enrich", {"record_id": "a"})
    cli.enqueue("enrich", {"record_id": "b"})
    cli("cancel", cli.enqueue("hold", {"gate": "g"}))
    # Then stats --json counts them per queue and state
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["default"]["counts"]["queued"] == 2
    assert stats["slow"]["counts"]["cancelled"] == 1
    assert stats["default"]["workers"] == 0
    # And the table names every queue
    table = cli("stats").stdout
    assert "default" in table and "slow" in table and "queued" in table


def test_stats_show_limits_and_their_state(cli: Cli) -> None:
    # Given a job of a task with a rate limit and a concurrency cap
    cli.enqueue("metered", {"n": 1})
    # Then stats --json lists both gates of its queue with their rules
    limits = json.loads(cli("stats", "--json").stdout)["metered"]["limits"]
    assert {g["name"]: g["kind"] for g in limits} == {
        "conc:task:metered": "conc",
        "rate:task:metered": "rate",
    }
    # And the table shows them in words, with their live state
    table = cli("stats").stdout
    assert "flow control" in table and "30/m" in table and "0/2 active" in table


def test_cancel_retry_and_cleanup(cli: Cli) -> None:
    # Given a queued job
    job_id = cli.enqueue("enrich", {"record_id": "r1"})
    # When it is cancelled (twice: idempotent), it is cancelled
    assert cli("cancel", job_id).stdout.split() == [job_id, "cancelled"]
    assert json.loads(cli("cancel", job_id, "--json").stdout)["status"] == "cancelled"
    # When it is retried, it is queued again; retrying a queued job is refused (exit 1)
    assert cli("retry", job_id).stdout.split() == [job_id, "queued"]
    res = cli("retry", job_id, check=False)
    assert res.returncode == 1 and "cannot retry" in res.stderr and "queued" in res.stderr
    # When cleanup runs, only finished jobs old enough go
    cli("cancel", job_id)
    assert cli("cleanup", "--older-than", "3600").stdout.strip() == "removed 0 jobs"
    assert json.loads(cli("cleanup", "--states", "failed", "--json").stdout) == {"removed": 0}
    assert cli("cleanup").stdout.strip() == "removed 1 jobs"
    assert cli.jobs() == []
    # And bad cleanup options are clear errors
    for args, needle in (
        (["--states", "active"], "--states"),
        (["--older-than", "-1"], "--older-than"),
    ):
        res = cli("cleanup", *args, check=False)
        assert res.returncode == 2 and needle in res.stderr, res.stderr


def test_wait_exit_codes_without_a_worker(cli: Cli) -> None:
    # Given a queued job and no worker: wait times out with exit 3, naming the state
    job_id = cli.enqueue("enrich", {"record_id": "r1"})
    res = cli("wait", job_id, "--timeout", "0.2", check=False)
    assert res.returncode == 3 and "timed out" in res.stderr and "queued" in res.stderr
    assert res.stdout == ""
    # Given it is cancelled: exit 2
    cli("cancel", job_id)
    res = cli("wait", job_id, check=False)
    assert res.returncode == 2 and "cancelled" in res.stderr
    # --json prints the whole job whatever the outcome
    res = cli("wait", job_id, "--json", check=False)
    assert res.returncode == 2 and json.loads(res.stdout)["status"] == "cancelled"
