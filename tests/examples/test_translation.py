"""examples/translation: translate → verify → (flagged) review → publish, on every backend, and
the runnable script end to end (HTTP API, CLI and a worker in one `conveyor serve`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from examples.translation.pipeline import build_app, find_issues, translate_text

from conveyor import Conveyor, JobStateError, WorkflowInfo
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]


def test_the_fake_translator_flags_the_words_it_cannot_translate() -> None:
    # Given a text with one word the vocabulary lacks
    out = translate_text("Hello world, stranger")
    # Then the word is kept in brackets and the verifier names it
    assert out == "hola mundo, [stranger]"
    assert find_issues(out) == ["untranslated: stranger"]
    assert find_issues(translate_text("The report is ready")) == []


async def _settled(app: Conveyor, wf: str) -> WorkflowInfo | None:
    info = await app.workflow(wf)
    return info if info.status.value in ("done", "awaiting") else None


async def test_a_flagged_translation_waits_for_one_review_and_a_clean_one_does_not(
    backend_url: str,
) -> None:
    # Given the example's app on this backend, and a worker
    app = build_app(backend_url)
    try:
        async with app.worker(concurrency=4):
            # When a clean and two flagged documents go in
            clean = await app.enqueue("translate", {"doc": "c", "text": "Hello world"})
            ok = await app.enqueue("translate", {"doc": "ok", "text": "Hello amigo"})
            no = await app.enqueue("translate", {"doc": "no", "text": "Good morning, Gotham"})
            flows = {
                j.id: await eventually(lambda j=j: _settled(app, j.id)) for j in (clean, ok, no)
            }
            # Then the clean one is published without a review
            assert flows[clean.id].labels == ["translating", "verifying", "publishing"]
            assert flows[clean.id].status.value == "done" and flows[clean.id].percent == 100.0
            # And the flagged ones wait at their review, showing the reviewer the issue
            for j in (ok, no):
                assert flows[j.id].status.value == "awaiting"
                assert flows[j.id].current == "reviewing"
                review = await app.get(flows[j.id].steps[-1].job_id)
                assert review is not None and review.prompt["issues"][0].startswith("untranslated")
            ok_review = flows[ok.id].steps[-1].job_id
            no_review = flows[no.id].steps[-1].job_id

            # When two reviewers approve the same translation at once
            results = await asyncio.gather(
                app.resume(ok_review, {"approve": True, "by": "ana"}),
                app.resume(ok_review, {"approve": False, "by": "bo"}),
                return_exceptions=True,
            )
            # Then exactly one decision is taken; the other is a conflict
            assert sorted(type(r).__name__ for r in results) == ["Job", "JobStateError"]
            assert any(isinstance(r, JobStateError) for r in results)

            # When the other is rejected through the CLI, on the store directly
            env = {**os.environ, "CONVEYOR_URL": backend_url}
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "conveyor", "--app", "examples.translation.pipeline:app",
                 "resume", no_review, "--data", json.dumps({"approve": False, "by": "sam"})],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr

            async def ended(wf: str) -> WorkflowInfo | None:
                info = await app.workflow(wf)
                return info if info.status.value == "done" else None

            approved = await eventually(lambda: ended(ok.id))
            rejected = await eventually(lambda: ended(no.id))
        # Then the approved one is published after its review, once
        winner = next(r for r in results if not isinstance(r, BaseException))
        expect = ["translating", "verifying", "reviewing"]
        if winner.input["approve"]:
            assert approved.labels == [*expect, "publishing"]
        else:
            assert approved.labels == expect
        # And the rejected one ends at its review, with the reviewer's answer as its result
        assert rejected.labels == expect
        last = await app.get(rejected.steps[-1].job_id)
        assert last is not None and last.result == {
            "doc": "no", "published": False, "rejected_by": "sam"}  # fmt: skip
    finally:
        await app.close()


@pytest.mark.slow
def test_the_example_script_runs_end_to_end(tmp_path: Path) -> None:
    # Given a fresh SQLite store for the script
    env = {**os.environ, "CONVEYOR_URL": f"sqlite:///{tmp_path / 'translation.db'}"}
    # When the example runs (a server with a worker, reviews through the CLI and the HTTP API)
    done = subprocess.run([sys.executable, "-m", "examples.translation.run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=110)  # fmt: skip
    # Then every document ended as the script expects, and it says so
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every document ended as expected" in done.stdout
    assert "translating → verifying → reviewing → publishing → done" in done.stdout
