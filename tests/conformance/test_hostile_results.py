"""A handler's result or progress that JSON would change fails loudly, never stored changed.

NaN and infinities were stored as ``null``, tuples as lists, dates as text: the reader got
something else than the handler returned. Now such a result fails the attempt with
``ResultNotSerializable`` naming the path, and such progress raises `ValidationError` in the
handler (which may catch it).
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest

from conveyor import Context, Conveyor, JobState, ValidationError
from tests.conftest import eventually, finished


@pytest.mark.parametrize(
    ("result", "where"),
    [
        pytest.param({"score": math.nan}, "result.score", id="NaN"),
        pytest.param([1.0, math.inf], "result[1]", id="inf"),
        pytest.param(-math.inf, "result", id="-inf"),
        pytest.param((1, 2), "result", id="tuple"),
        pytest.param({"at": datetime.datetime(2026, 1, 1)}, "result.at", id="datetime"),
        pytest.param({"big": 2**64}, "result.big", id="huge int"),
        pytest.param({"text": "\ud800"}, None, id="lone surrogate"),
    ],
)
async def test_a_result_json_would_change_fails_the_attempt(
    app: Conveyor, result: Any, where: str | None
) -> None:
    # Given a handler returning a value JSON cannot hold as it is
    @app.task(retries=2)
    async def compute() -> Any:
        return result

    # When it runs
    async with app.worker(concurrency=1):
        job = await compute.enqueue()
        done = await eventually(lambda: finished(app, job.id))
    # Then the job failed at once (no retry: the same code returns the same value) saying why,
    # and no result was stored
    assert done.status is JobState.FAILED and done.attempt == 1
    assert done.result is None
    assert done.error is not None and done.error["type"] == "ResultNotSerializable"
    if where is not None:
        assert repr(where) in done.error["message"], done.error["message"]
    assert len(done.error["message"]) < 400


async def test_json_results_read_back_equal(app: Conveyor) -> None:
    # Given a handler returning awkward but valid JSON
    value = {"n": [2**64 - 1, -(2**63), -0.0, 5e-324], "s": ["a\x00b", "😀"], "": None}

    @app.task
    async def compute() -> Any:
        return value

    # When it runs, then the stored result is what it returned
    async with app.worker(concurrency=1):
        job = await compute.enqueue()
        assert await app.wait(job.id, timeout=10) == value


async def test_progress_json_would_change_is_refused_in_the_handler(app: Conveyor) -> None:
    # Given a handler reporting progress with values JSON cannot hold as they are
    seen: list[str | None] = []

    @app.task
    async def report(ctx: Context) -> str:
        for kwargs in (
            {"meta": {"eta": math.nan}},
            {"meta": {"when": datetime.date(2026, 1, 1)}},
            {"message": "\ud800"},
            {"stage": b"load"},
        ):
            try:
                await ctx.progress(10, **kwargs)
            except ValidationError as exc:
                seen.append(exc.field)
        await ctx.progress(50, "half", stage="s", meta={"rows": [1, 2.5, None]})
        return "done"

    # When it runs
    async with app.worker(concurrency=1):
        job = await report.enqueue()
        assert await app.wait(job.id, timeout=10) == "done"
    # Then each bad report raised ValidationError naming the field, and the good one was stored
    assert seen == ["progress.meta.eta", "progress.meta.when", "progress.message", "progress.stage"]
    got = await app.get(job.id)
    assert (got.progress.percent, got.progress.message, got.progress.stage) == (50, "half", "s")
    assert got.progress.meta == {"rows": [1, 2.5, None]}
