"""``conveyor enqueue`` / ``retry`` against a full queue (``max_queued``), and ``conveyor
stats`` showing the limit."""

from __future__ import annotations

import json

from tests.cli.conftest import Cli

APP = """
from conveyor import Conveyor, Permanent

app = Conveyor()  # $CONVEYOR_URL
app.queue("small", max_queued=2)


@app.task(queue="small", retries=0)
async def job(n: int) -> int:
    return n
"""


def test_enqueue_into_a_full_queue_exits_75_and_stats_show_it(cli: Cli) -> None:
    # Given an app whose queue 'small' takes 2 waiting jobs, holding 2
    (cli.cwd / "bpapp.py").write_text(APP)
    for n in range(2):
        cli("--app", "bpapp:app", "enqueue", "job", "--payload", json.dumps({"n": n}))
    # When a third is enqueued
    res = cli("--app", "bpapp:app", "enqueue", "job", "--payload", '{"n": 2}', check=False)
    # Then it exits 75 (try again later) with one line naming the queue and its limit
    assert res.returncode == 75, res.stderr
    assert "queue 'small' is full" in res.stderr and "max_queued=2" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(cli.jobs("--queue", "small")) == 2
    # And without the app, the limit its producers recorded still holds
    res = cli("enqueue", "job", "--payload", '{"n": 3}', "--unchecked", "--queue", "small",
              check=False)  # fmt: skip
    assert res.returncode == 75 and "max_queued=2" in res.stderr, res.stderr
    assert len(cli.jobs("--queue", "small")) == 2
    # And stats, even without the app, show the limit and that the queue is full
    stats = json.loads(cli("stats", "--json").stdout)["small"]
    assert (stats["max_queued"], stats["full"]) == (2, True)
    table = cli("stats").stdout
    assert "waiting/max" in table and "2/2 FULL" in table
