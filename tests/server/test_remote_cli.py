"""The CLI's job commands against a remote server: the real ``conveyor`` command in a
subprocess, ``--url http://...`` and ``--api-key`` (or ``$CONVEYOR_API_KEY``), talking to a
real uvicorn over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor import Conveyor
from tests.conftest import eventually_sync
from tests.server.harness import ApiServer

Serve = Callable[..., ApiServer]


def cli(
    srv: ApiServer, key: str | None, *args: str, cwd: Path, env_key: bool = False
) -> subprocess.CompletedProcess[str]:
    cwd = cwd / "cli"  # not beside the test's store: nothing may be written here
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    head = ["--url", srv.url]
    if key is not None and env_key:
        env["CONVEYOR_API_KEY"] = key
    elif key is not None:
        head += ["--api-key", key]
    return subprocess.run([sys.executable, "-m", "conveyor", *head, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_the_job_commands_work_against_a_server(
    serve: Serve, keys: Any, tmp_path: Path
) -> None:
    # Given a served app with a worker and a tenant's key
    srv = serve(worker={"concurrency": 1})
    key = await keys(tenant="acme")
    # When a job is enqueued through the CLI
    out = cli(srv, key, "enqueue", "echo", "--payload", '{"value": 5}', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    # Then wait prints its result, status and list show it (key from the environment too)
    out = cli(srv, key, "wait", job_id, "--timeout", "10", cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout) == 5, out.stderr
    out = cli(srv, key, "status", job_id, "--json", cwd=tmp_path, env_key=True)
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "completed"
    assert json.loads(out.stdout)["tenant"] == "acme"
    out = cli(srv, key, "list", "--json", cwd=tmp_path, env_key=True)
    assert [j["id"] for j in json.loads(out.stdout)["jobs"]] == [job_id]
    # And a failed job exits 1 from wait, then retry requeues it
    out = cli(srv, key, "enqueue", "boom", cwd=tmp_path)
    boom = out.stdout.strip()
    out = cli(srv, key, "wait", boom, "--timeout", "10", cwd=tmp_path)
    assert out.returncode == 1 and "on purpose" in out.stderr
    out = cli(srv, key, "retry", boom, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.split()[0] == boom, out.stderr
    # And cancelling a completed job is a one-line error, exit 1
    out = cli(srv, key, "cancel", job_id, cwd=tmp_path)
    assert out.returncode == 1 and "completed" in out.stderr and "Traceback" not in out.stderr


async def test_remote_errors_are_one_line_with_the_right_exit_status(
    serve: Serve, keys: Any, store: Conveyor, tmp_path: Path
) -> None:
    # Given another tenant's job on a served app
    srv = serve()
    key = await keys(tenant="acme")
    theirs = await store.enqueue("echo", {"value": 1}, tenant="globex")
    # Then another tenant's job is not found (exit 2), like a missing one
    for ident in (theirs.id, "missing"):
        out = cli(srv, key, "status", ident, cwd=tmp_path)
        assert out.returncode == 2 and "not found" in out.stderr, out.stderr
    # And an unknown task or bad payload is refused by the server (exit 2)
    out = cli(srv, key, "enqueue", "nope", cwd=tmp_path)
    assert out.returncode == 2 and "unknown task" in out.stderr
    # And a wrong or missing key is refused (exit 1), naming the key
    for bad in ("cvk_wrong", None):
        out = cli(srv, bad, "list", cwd=tmp_path)
        assert out.returncode == 1 and "API key" in out.stderr, out.stderr
    # And a read-only key cannot enqueue
    ro = await keys(tenant="acme", read_only=True)
    out = cli(srv, ro, "enqueue", "echo", cwd=tmp_path)
    assert out.returncode == 1 and "read-only" in out.stderr
    # And commands that need the backend itself say so
    out = cli(srv, key, "stats", cwd=tmp_path)
    assert out.returncode == 2 and "backend URL" in out.stderr
    assert "Traceback" not in out.stderr
    # And nothing was written beside the commands (no stray SQLite file)
    assert not list((tmp_path / "cli").iterdir())


async def test_resume_works_against_a_server(serve: Serve, keys: Any, tmp_path: Path) -> None:
    # Given a served app with a worker, and a tenant's job awaiting a decision
    srv = serve(worker={"concurrency": 1})
    key, other = await keys(tenant="acme"), await keys(tenant="globex")
    out = cli(srv, key, "enqueue", "approve", "--payload", '{"what": "the plan"}', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()

    def awaiting() -> bool:
        out = cli(srv, key, "status", job_id, "--json", cwd=tmp_path)
        return json.loads(out.stdout)["status"] == "awaiting"

    eventually_sync(awaiting, what="the job awaiting its decision")
    # When another tenant resumes it: not found
    out = cli(srv, other, "resume", job_id, "--data", '"yes"', cwd=tmp_path)
    assert out.returncode != 0 and "not found" in out.stderr
    # When its tenant resumes it: queued, then completed with the decision
    out = cli(srv, key, "resume", job_id, "--data", '"yes"', "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["input"] == "yes"
    out = cli(srv, key, "wait", job_id, "--timeout", "10", cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout) == {"decision": "yes"}, out.stderr
    # And a second resume is a conflict naming the state
    out = cli(srv, key, "resume", job_id, cwd=tmp_path)
    assert out.returncode != 0 and "completed" in out.stderr
