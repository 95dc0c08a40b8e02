"""The spool and its forwarder are backend-agnostic: in front of a SQLite backend that raises
`BackendUnavailable` (its directory is gone, e.g. an unmounted volume) enqueues are spooled and
forwarded once it is back. Refusals that are not about reaching the backend never spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import BackendUnavailable, ConfigurationError, Conveyor, ValidationError
from tests.conftest import eventually


def _app(tmp_path: Path, ran: list[int]) -> Conveyor:
    app = Conveyor(f"sqlite:///{tmp_path}/mnt/conveyor.db", spool=f"sqlite:///{tmp_path}/s.db")

    @app.task
    async def work(n: int) -> int:
        ran.append(n)
        return n

    return app


async def test_a_sqlite_backend_that_is_unavailable_gets_its_jobs_from_the_spool(
    tmp_path: Path,
) -> None:
    # Given an app whose SQLite directory does not exist (yet)
    ran: list[int] = []
    app = _app(tmp_path, ran)
    try:
        # When it enqueues
        jobs = [await app.enqueue("work", {"n": n}, delay=0) for n in range(5)]
        batch = await app.enqueue_many([("work", {"n": n}) for n in range(5, 8)])
        # Then the jobs are spooled, and read back from the spool
        assert all(j.spooled for j in jobs) and batch.spooled
        assert (await app.get(jobs[0].id)).spooled
        # When the directory appears
        (tmp_path / "mnt").mkdir()
        # Then the forwarder stores them, in order, and a worker runs each once
        await eventually(lambda: _forwarded(app, jobs[-1].id), what="the spool forwarded")
        async with app.worker(concurrency=1, prefetch=0):
            await eventually(lambda: len(ran) >= 8, what="8 jobs run")
        assert ran == list(range(8))
        assert (await app.stats())["default"].spooled == 0
    finally:
        await app.close()


async def _forwarded(app: Conveyor, job_id: str) -> bool:
    return not (await app.get(job_id)).spooled


async def test_refusals_that_are_not_about_the_backend_never_spool(tmp_path: Path) -> None:
    # Given an app with a spool, its backend unavailable
    app = _app(tmp_path, [])
    try:
        # When it enqueues a bad payload or an unknown task
        with pytest.raises(ValidationError):
            await app.enqueue("work", {"n": "not a number"})
        with pytest.raises(ValidationError):
            await app.enqueue("nope", {})
        # Then nothing was spooled (stats itself fails fast: the backend is unavailable)
        assert await app._spooler.spool.depth() == {}  # type: ignore[union-attr]
        with pytest.raises(BackendUnavailable):
            await app.stats()
    finally:
        await app.close()


async def test_without_a_spool_an_unavailable_backend_raises(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/mnt/conveyor.db")
    app.task(name="work")(lambda n: n)
    with pytest.raises(BackendUnavailable, match="does not exist"):
        await app.enqueue("work", {"n": 1})
    await app.close()


@pytest.mark.parametrize(
    "url", ["spool.db", "redis://localhost/0", "sqlite://", "sqlite:///s.db?journal=off"]
)
def test_a_bad_spool_url_is_refused_when_the_app_is_built(url: str) -> None:
    with pytest.raises(ConfigurationError, match="spool"):
        Conveyor("sqlite:///c.db", spool=url)
