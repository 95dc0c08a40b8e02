"""`conveyor workers`: the live workers, from another process."""

from __future__ import annotations

import json
import signal

from tests.conftest import eventually_sync

from .conftest import Cli


def test_workers_lists_a_live_worker_and_forgets_it_when_it_stops(cli: Cli) -> None:
    # Given no worker at all
    assert cli("workers").stdout.strip() == "no live workers"
    assert json.loads(cli("workers", "--json").stdout) == []
    # When a worker runs
    worker = cli.worker("--name", "w-cli", "--concurrency", "3", "--queues", "default,slow")
    worker.wait_for_output("started")
    # Then it is listed, with where it runs, what it serves and the tasks it publishes
    [seen] = json.loads(cli("workers", "--json").stdout)
    assert (seen["id"], seen["pid"], seen["queues"]) == ("w-cli", worker.pid,
                                                         ["default", "slow"])  # fmt: skip
    assert (seen["concurrency"], seen["active"], seen["processed"], seen["failed"]) == (3, 0, 0, 0)
    assert seen["last_seen"] >= seen["started_at"] - 1
    assert {t["name"]: t["queue"] for t in seen["tasks"]} == {
        "enrich": "default", "hold": "slow", "explode": "default", "review": "default"
    }  # fmt: skip
    table = cli("workers").stdout
    assert "w-cli" in table and "default,slow" in table and "0/3" in table
    # When it stops, it is gone
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    eventually_sync(lambda: json.loads(cli("workers", "--json").stdout) == [], what="no workers")
