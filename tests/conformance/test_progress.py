"""Progress reports: persisted on the job while it runs, with an ETA; bad input rejected."""

from __future__ import annotations

import asyncio
import threading

from conveyor import Context, Conveyor, Job, JobState, ValidationError
from tests.conftest import eventually


async def _progress_at(app: Conveyor, job_id: str, percent: float) -> Job | None:
    job = await app.get(job_id)
    return job if job.progress.percent == percent else None


async def test_progress_is_persisted_while_active_with_an_eta(app: Conveyor) -> None:
    # Given a handler that reports 40% with a message, stage and meta, then waits
    release = asyncio.Event()

    @app.task
    async def transcode(ctx: Context) -> str:
        await ctx.progress(40, "transcribing audio", stage="audio", meta={"chunk": 4})
        await release.wait()
        return "done"

    async with app.worker(concurrency=1):
        job = await transcode.enqueue()
        # When another reader polls the job
        seen = await eventually(lambda: _progress_at(app, job.id, 40), what="progress 40%")
        # Then it sees every part of the report, and an ETA while the job is active
        assert seen.status is JobState.ACTIVE
        assert seen.progress.message == "transcribing audio"
        assert seen.progress.stage == "audio"
        assert seen.progress.meta == {"chunk": 4}
        assert seen.progress.updated_at is not None
        assert isinstance(seen.eta, float) and seen.eta >= 0
        release.set()
        assert await app.wait(job.id, timeout=5) == "done"
    # And a finished job has no ETA
    assert (await app.get(job.id)).eta is None


async def test_sync_handlers_report_progress_too(app: Conveyor) -> None:
    # Given a sync handler that reports progress and then blocks
    release = threading.Event()

    @app.task
    def crunch(ctx: Context) -> str:
        ctx.progress(75, "almost").result(timeout=5)  # type: ignore[union-attr]
        release.wait(10)
        return "crunched"

    async with app.worker(concurrency=1):
        job = await crunch.enqueue()
        # Then the report is persisted while it runs
        seen = await eventually(lambda: _progress_at(app, job.id, 75), what="progress 75%")
        assert seen.progress.message == "almost"
        release.set()
        assert await app.wait(job.id, timeout=5) == "crunched"


async def test_invalid_percent_raises_validation_error_in_the_handler(app: Conveyor) -> None:
    # Given a handler that reports 150%
    raised: list[BaseException] = []

    @app.task(retries=0)
    async def overeager(ctx: Context) -> str:
        try:
            await ctx.progress(150)
        except ValidationError as exc:
            raised.append(exc)
            raise
        return "unreachable"

    # When it runs
    async with app.worker(concurrency=1):
        job = await overeager.enqueue()
        await eventually(lambda: raised, what="the handler to call progress")
        await eventually(lambda: _final(app, job.id), what="the job to end")
    # Then progress raised ValidationError naming 'percent', and nothing was stored
    assert isinstance(raised[0], ValidationError) and raised[0].field == "percent"
    job = await app.get(job.id)
    assert job.status is JobState.FAILED
    assert job.error is not None and job.error["type"] == "ValidationError"
    assert job.progress.percent is None


async def _final(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status.is_final
