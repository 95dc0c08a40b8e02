"""``GET /v1/workflows/{id}``, `conveyor.Client.workflow` and ``conveyor --url ... workflow``:
a chain's steps read over HTTP, tenant-scoped."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client, Conveyor, Next, WorkflowNotFound, WorkflowState
from tests.server.conftest import client
from tests.server.harness import ApiServer
from tests.server.test_remote_cli import cli


async def _ran_chain(store: Conveyor, tenant: str) -> str:
    """A two-step chain (draft -> echo) of ``tenant``, run to its end; the workflow id."""

    @store.task(step="drafting", steps=2)
    async def draft(text: str) -> Next:
        return Next("echo", {"value": text.upper()}, step="echoing")

    job = await store.enqueue("draft", {"text": "hi"}, tenant=tenant)
    async with store.worker(concurrency=1, queues=["default"]):
        await store.wait(job.id, timeout=10)
        nxt = (await store.get(job.id)).next_jobs[0]
        assert await store.wait(nxt, timeout=10) == "HI"
    return job.id


async def test_a_workflow_reads_back_for_its_tenant_only(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor
) -> None:
    # Given a chain of tenant acme that ran to its end
    srv = serve()
    wf = await _ran_chain(store, "acme")
    async with client(srv, await keys("acme")) as http:
        # When acme reads its workflow
        r = await http.get(f"/v1/workflows/{wf}")
        # Then it is done, two steps in order with their labels, jobs and outcomes
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["id"], body["status"], body["current"]) == (wf, "done", "echoing")
        assert [s["step"] for s in body["steps"]] == ["drafting", "echoing"]
        assert [s["status"] for s in body["steps"]] == ["completed", "completed"]
        assert body["steps"][0]["next_jobs"] == [body["steps"][1]["job_id"]]
        assert (body["percent"], body["total_steps"], body["tenant"]) == (100.0, 2, "acme")
        # And the next step's job shows its workflow, parent and step
        step = (await http.get(f"/v1/jobs/{body['steps'][1]['job_id']}")).json()
        assert (step["workflow"], step["parent"], step["step"]) == (wf, wf, "echoing")
    async with client(srv, await keys("globex")) as http:
        # When another tenant asks for it, or for an unknown id, Then both answer the same 404
        for ident in (wf, "0" * 26):
            r = await http.get(f"/v1/workflows/{ident}")
            assert r.status_code == 404
            assert r.json() == {"error": {"code": "not_found",
                                          "message": f"workflow '{ident}' not found"}}  # fmt: skip
    # And the Python client reads the same, and raises WorkflowNotFound for another tenant
    async with Client(srv.url, await keys("acme")) as c:
        info = await c.workflow(wf)
        assert info.status is WorkflowState.DONE and info.labels == ["drafting", "echoing"]
    async with Client(srv.url, await keys("globex")) as c:
        with pytest.raises(WorkflowNotFound):
            await c.workflow(wf)


async def test_the_workflow_command_prints_the_step_line_remotely(
    serve: Callable[..., ApiServer], keys: Callable[..., Any], store: Conveyor, tmp_path: Path
) -> None:
    # Given a chain of acme that ran, served
    srv = serve()
    wf = await _ran_chain(store, "acme")
    key = await keys("acme")
    # When `conveyor --url ... workflow ID` runs, in text and in JSON
    out = cli(srv, key, "workflow", wf, cwd=tmp_path)
    as_json = cli(srv, key, "workflow", wf, "--json", cwd=tmp_path)
    # Then it prints the step line ending in done, and the history; JSON has the steps
    assert out.returncode == 0, out.stderr
    assert "drafting → echoing → done" in out.stdout
    assert "1/4" in out.stdout and "echo" in out.stdout
    assert [s["step"] for s in json.loads(as_json.stdout)["steps"]] == ["drafting", "echoing"]
    # And `status` of the second step names its workflow and step
    info = json.loads(as_json.stdout)
    status = cli(srv, key, "status", info["steps"][1]["job_id"], cwd=tmp_path)
    assert f"{wf}, step echoing" in status.stdout
    # And another tenant's key gets a clear not-found, exit status 1
    other = cli(srv, await keys("globex"), "workflow", wf, cwd=tmp_path)
    assert other.returncode != 0 and "not found" in other.stderr
