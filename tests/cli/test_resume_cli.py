"""``conveyor resume`` with a local app, and awaiting jobs in ``status`` and ``list``: real
subprocesses on a real SQLite file."""

from __future__ import annotations

import json

from tests.conftest import eventually_sync

from .conftest import Cli


def test_resume_continues_an_awaiting_job_once(cli: Cli) -> None:
    # Given a worker and a job that awaits a decision
    cli.worker("--concurrency", "1")
    job_id = cli.enqueue("review", {"doc": "q3-report"})
    eventually_sync(lambda: cli.job(job_id)["status"] == "awaiting", what="awaiting")
    # Then status and list show it with its prompt and deadline
    detail = cli("status", job_id).stdout
    assert "awaiting" in detail and "q3-report" in detail and "deadline" in detail
    listed = cli("list", "--status", "awaiting").stdout
    assert job_id in listed and "prompt" in listed and "q3-report" in listed
    assert [j["id"] for j in cli.jobs("--status", "awaiting")] == [job_id]
    # When --data is not JSON: a clear error, nothing changed
    bad = cli("resume", job_id, "--data", "{approved", check=False)
    assert bad.returncode != 0 and "--data is not JSON" in bad.stderr
    assert cli.job(job_id)["status"] == "awaiting"
    # When it is resumed with a decision
    out = cli("resume", job_id, "--data", '{"approved": true}')
    # Then it is queued again, and the handler completes with the decision
    assert out.stdout.split() == [job_id, "queued"]
    done = eventually_sync(
        lambda: (j := cli.job(job_id))["status"] == "completed" and j, what="completed"
    )
    assert done["result"] == {"doc": "q3-report", "decision": {"approved": True}}
    assert (done["resumes"], done["attempt"]) == (1, 1)
    # And a second resume is refused, naming the job's state
    again = cli("resume", job_id, "--data", "false", check=False)
    assert again.returncode != 0 and "completed" in again.stderr
    assert json.loads(cli("status", job_id, "--json").stdout)["input"] == {"approved": True}
