"""`conveyor queues` (pause, resume, list) against a real worker process, and `conveyor keys`
(create, list, revoke), as real subprocesses on a real SQLite file."""

from __future__ import annotations

import json
import signal

from conveyor import Conveyor
from tests.conftest import eventually_sync

from .conftest import Cli


def _status(cli: Cli, job_id: str) -> str:
    return str(cli.job(job_id)["status"])


def test_a_paused_queue_waits_in_a_worker_process_until_resumed(cli: Cli) -> None:
    # Given a running worker process serving every queue of the app
    worker = cli.worker("--concurrency", "2")
    worker.wait_for_output("started")
    # When the default queue is paused from the command line
    res = cli("queues", "pause", "default")
    assert res.stdout.strip() == "queue default paused"
    assert cli("queues", "pause", "default").stdout.strip() == "queue default was already paused"
    # Then a job of it waits, while a job of another queue (enqueued after it) runs
    waiting = cli.enqueue("enrich", {"record_id": "r1", "steps": 1})
    control = cli.enqueue("metered", {"n": 1})
    eventually_sync(lambda: _status(cli, control) == "completed", what="the other queue's job")
    assert _status(cli, waiting) == "queued"
    # And the listing shows the queue paused with its waiting job
    listed = {q["queue"]: q for q in json.loads(cli("queues", "list", "--json").stdout)}
    assert (listed["default"]["paused"], listed["default"]["queued"]) == (True, 1)
    assert listed["metered"]["paused"] is False
    table = cli("queues", "list").stdout
    assert "default" in table and "PAUSED" in table
    assert "default (paused)" in cli("stats").stdout
    # When it is resumed, the job runs
    assert cli("queues", "resume", "default").stdout.strip() == "queue default resumed"
    eventually_sync(lambda: _status(cli, waiting) == "completed", what="the resumed job")
    assert cli("queues", "resume", "default").stdout.strip() == "queue default was not paused"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_a_bad_queue_name_exits_2_naming_it(cli: Cli) -> None:
    res = cli("queues", "pause", "no spaces{}", check=False)
    assert res.returncode == 2
    assert "queue name 'no spaces{}' is invalid" in res.stderr and "Traceback" not in res.stderr


async def test_keys_are_created_once_listed_without_secrets_and_revoked(cli: Cli) -> None:
    # When a tenant key and a read-only admin key are created
    made = cli("keys", "create", "--tenant", "acme", "--name", "billing").stdout
    admin = json.loads(cli("keys", "create", "--admin", "--read-only", "--json").stdout)
    # Then the key is printed once, with its id, tenant and flags, and a warning
    lines = dict(line.split(":", 1) for line in made.splitlines() if ": " in line)
    full, key_id = lines["key"].strip(), lines["id"].strip()
    assert full.startswith(f"cvk_{key_id}_")
    assert lines["tenant"].strip() == "acme" and lines["name"].strip() == "billing"
    assert (lines["admin"].strip(), lines["read-only"].strip()) == ("no", "no")
    assert "will not be shown again" in made
    assert (admin["tenant"], admin["admin"], admin["read_only"]) == (None, True, True)
    assert admin["key"].startswith(f"cvk_{admin['id']}_") and "secret_hash" not in admin
    # And both verify through the app's API keys
    app = Conveyor(cli.url)
    try:
        assert (await app.api_keys.verify(full)).id == key_id  # type: ignore[union-attr]
        assert (await app.api_keys.verify(admin["key"])).admin  # type: ignore[union-attr]
        # And listings show them, oldest first, but never a secret or a hash
        listed = cli("keys", "list", "--json").stdout
        assert [k["id"] for k in json.loads(listed)] == [key_id, admin["id"]]
        record = await app.api_keys.get(key_id)
        assert record is not None
        for text in (listed, cli("keys", "list").stdout):
            assert full[len(f"cvk_{key_id}_") :] not in text and record.secret_hash not in text
        assert [k["id"] for k in json.loads(cli("keys", "list", "--tenant", "acme",
                                                "--json").stdout)] == [key_id]  # fmt: skip
        # When the tenant key is revoked (twice)
        assert cli("keys", "revoke", key_id).stdout.strip() == f"API key {key_id} revoked"
        assert "already revoked" in cli("keys", "revoke", key_id).stdout
        # Then it no longer verifies, and the listing says when it was revoked
        assert await app.api_keys.verify(full) is None
        [shown] = json.loads(cli("keys", "list", "--tenant", "acme", "--json").stdout)
        assert shown["revoked_at"] is not None
    finally:
        await app.close()


def test_keys_commands_refuse_bad_input_with_one_line(cli: Cli) -> None:
    # A key for nobody, an admin key for one tenant, an unknown id: exit 2, a clear message
    for args, message in (
        (("keys", "create"), "give --tenant TENANT"),
        (("keys", "create", "--admin", "--tenant", "acme"), "give it no --tenant"),
        (("keys", "create", "--tenant", ""), "tenant must be a non-empty string"),
        (("keys", "revoke", "k_000000000000"), "no API key 'k_000000000000'"),
        (("keys", "revoke", "nonsense"), "no API key 'nonsense'"),
    ):
        res = cli(*args, check=False)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr
    # And nothing was stored
    assert cli("keys", "list").stdout.strip() == "no API keys"
