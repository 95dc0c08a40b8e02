"""`conveyor worker --log-format json|plain` as a real process: every line is a record, the
records of a job name it, and no payload or result reaches the log."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

from .conftest import Cli

SECRET = "sk-live-4f9a8b7c6d5e"  # in every payload: must appear in no log line
RESULT_SECRET = "rs-0b1c2d3e4f5a6978"  # in every result

LOGAPP = f'''
import logging

from conveyor import Context, Conveyor

app = Conveyor()  # $CONVEYOR_URL
vendor = logging.getLogger("vendor.client")


@app.task(retries=0)
async def charge(ctx: Context, card: str, amount: int) -> dict:
    ctx.log.info("charging %d", amount)
    vendor.warning("vendor call slow")
    return {{"token": "{RESULT_SECRET}"}}


@app.task(retries=0)
def charge_sync(ctx: Context, card: str, amount: int) -> dict:
    ctx.log.info("charging %d in a thread", amount)
    vendor.warning("vendor call slow in a thread")
    return {{"token": "{RESULT_SECRET}"}}


@app.task(retries=1, backoff_initial=0, backoff_max=0)
async def decline(ctx: Context, card: str) -> None:
    try:
        raise ValueError("x" * 50_000)
    except ValueError:
        ctx.log.warning("vendor said no", exc_info=True)
    raise ValueError("card declined")
'''


def _records(text: str) -> list[dict[str, Any]]:
    """Each line of the output as JSON (fails on a line that is not)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return out


def test_json_logs_name_the_job_on_every_record_and_never_show_payloads(cli: Cli) -> None:
    # Given an app whose handlers log through ctx.log and a library logger, async and sync,
    # and jobs whose payloads hold a secret
    (cli.cwd / "logapp.py").write_text(LOGAPP)
    ids = {
        "charge": cli("--app", "logapp:app", "enqueue", "charge", "--payload",
                      json.dumps({"card": SECRET, "amount": 5})).stdout.strip(),
        "charge_sync": cli("--app", "logapp:app", "enqueue", "charge_sync", "--payload",
                           json.dumps({"card": SECRET, "amount": 6})).stdout.strip(),
        "decline": cli("--app", "logapp:app", "enqueue", "decline", "--payload",
                       json.dumps({"card": SECRET})).stdout.strip(),
    }  # fmt: skip
    # When a worker runs them with JSON logs at INFO, then stops
    worker = cli.worker_process("logapp:app", "--log-format", "json", "--log-level", "INFO")
    for job_id in ids.values():
        cli("wait", job_id, "--timeout", "20", check=False)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    text = worker.output()
    # Then every line is a JSON record with the four base fields, the banners included
    records = _records(text)
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]) for r in records)
    assert any("started" in r["message"] for r in records)
    assert any("stopped after 4 jobs" in r["message"] for r in records)
    # And every record emitted while a job ran names it (task, queue, attempt)
    expected = {
        "charge": {"charging 5", "vendor call slow"},
        "charge_sync": {"charging 6 in a thread", "vendor call slow in a thread"},
    }
    for task, messages in expected.items():
        mine = [r for r in records if r.get("job_id") == ids[task]]
        assert {r["message"] for r in mine} >= messages, mine
        assert all(r["task"] == task and r["queue"] == "default" and r["attempt"] == 1
                   for r in mine)  # fmt: skip
        assert {r["logger"] for r in mine} >= {f"conveyor.task.{task}", "vendor.client"}
    # And the worker's own records of a failed job name it too, per attempt
    declined = [r for r in records if r.get("job_id") == ids["decline"]]
    assert [r["attempt"] for r in declined if "vendor said no" in r["message"]] == [1, 2]
    failed = [r for r in declined if r["logger"].startswith("conveyor.worker")]
    assert [r["attempt"] for r in failed] == [1, 2], failed
    assert "card declined" in failed[-1]["message"]
    # And a 50,000-character exception is bounded in the record
    exc = [r["exc"] for r in declined if "exc" in r]
    assert exc and all(len(e) < 4200 and "characters left out" in e for e in exc)
    # And no payload value nor result value appears anywhere in the output
    assert SECRET not in text and RESULT_SECRET not in text
    # And records outside jobs carry no job fields
    assert all("job_id" not in r for r in records if "started" in r["message"])


def test_plain_logs_append_the_job_fields(cli: Cli) -> None:
    # Given a job whose handler logs
    (cli.cwd / "logapp.py").write_text(LOGAPP)
    job_id = cli("--app", "logapp:app", "enqueue", "charge_sync", "--payload",
                 json.dumps({"card": SECRET, "amount": 7})).stdout.strip()  # fmt: skip
    # When a worker with plain logs (the default) at INFO runs it
    worker = cli.worker_process("logapp:app", "--log-level", "INFO")
    cli("wait", job_id, "--timeout", "20")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    # Then its records are text lines ending with the job's fields, and the secret is absent
    text = worker.output()
    suffix = f" [job={job_id} task=charge_sync queue=default attempt=1]"
    lines = [line for line in text.splitlines() if "in a thread" in line]
    assert len(lines) == 2 and all(line.endswith(suffix) for line in lines), text
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO conveyor.task.charge_sync: ",
                    lines[0])  # fmt: skip
    assert SECRET not in text


def test_an_unknown_log_format_is_refused(cli: Cli) -> None:
    res = cli("worker", "cliapp:app", "--log-format", "xml", check=False)
    assert res.returncode == 2 and "--log-format" in res.stderr and "json" in res.stderr
