"""The demo app: simulated LLM/API enrichment of records, with transient failures."""

from __future__ import annotations

import asyncio
import os
import random

from conveyor import Context, Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///demo.db"))

STAGES = ("fetch", "transcribe", "summarize", "store")


@app.task(queue="enrichment", retries=3, backoff_initial=0.2, backoff_factor=2.0, timeout=30)
async def enrich(ctx: Context, record_id: str, fail_times: int = 0) -> dict[str, object]:
    """Enrich one record in four steps; fail the first ``fail_times`` attempts (a flaky API)."""
    for i, stage in enumerate(STAGES):
        await asyncio.sleep(random.uniform(0.04, 0.2))
        if stage == "transcribe" and ctx.attempt <= fail_times:
            raise RuntimeError(f"upstream API returned 503 for {record_id} (attempt {ctx.attempt})")
        await ctx.progress((i + 1) * 100 / len(STAGES), f"{stage} done", stage=stage)
    return {"record_id": record_id, "summary": f"summary of {record_id}", "attempts": ctx.attempt}
