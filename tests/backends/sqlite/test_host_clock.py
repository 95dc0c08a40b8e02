"""SQLite's clock is the host's: a process whose own view of time is off (a patched
``time.time``, as libfaketime does below Python) still decides leases and due times on the
clock every other process of the host shares. The same with real processes under libfaketime:
``tests/chaos/test_chaos.py`` (skew)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams

SKEW = 300.0


async def test_a_process_whose_clock_is_ahead_neither_steals_leases_nor_runs_delayed_jobs_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    app = Conveyor(url)

    @app.task(lease=30)
    async def noop(ctx: object) -> None:
        return None

    async with app:
        # Given a job claimed by a worker with the host's clock (30 s lease) and a job due in 60 s
        held = await noop.enqueue()
        claim = await app.backend.claim_jobs(ClaimParams(["default"], 10, "honest"))
        assert [j.id for j in claim.jobs] == [held.id]
        later = await noop.enqueue_with({}, delay=60)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW)
    skewed_app = Conveyor(url)
    skewed_app.declare("noop")
    async with skewed_app:
        # When a process whose clock is 5 minutes ahead recovers expired leases and claims
        recovered = await skewed_app.backend.recover_expired()
        claim = await skewed_app.backend.claim_jobs(ClaimParams(["default"], 10, "skewed"))
        # Then the live lease is not recovered and the delayed job is not claimed
        assert recovered == []
        assert claim.jobs == []
        job = await skewed_app.get(later.id)
        assert str(job.status) == "scheduled"
