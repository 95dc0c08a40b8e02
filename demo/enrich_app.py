"""The demo app: simulated LLM/API enrichment of records, with transient failures.

Run a worker for it with ``python -m conveyor worker demo.enrich_app:app`` from the repository
root. The store is ``sqlite:///demo.db`` unless ``$CONVEYOR_URL`` says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import random

from conveyor import Context, Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///demo.db"))

# (stage, message): what an enrichment pipeline spends its time on.
STEPS = (
    ("fetch", "fetched the record"),
    ("llm", "asked the model for a summary"),
    ("entities", "extracted entities"),
    ("store", "stored the enrichment"),
)


@app.task(queue="enrichment", retries=3, backoff_initial=0.2, backoff_factor=2.0, timeout=30)
async def enrich(ctx: Context, record_id: str, fail_times: int = 0) -> dict[str, object]:
    """Enrich one record in four awaited steps (0.2-0.8 s in all). The first ``fail_times``
    attempts fail at the model call, like a flaky API answering 503: conveyor retries them with
    exponential backoff (0.2 s, 0.4 s, ...)."""
    for i, (stage, message) in enumerate(STEPS):
        await asyncio.sleep(random.uniform(0.05, 0.2))
        if stage == "llm" and ctx.attempt <= fail_times:
            raise RuntimeError(f"model API answered 503 for {record_id} (attempt {ctx.attempt})")
        await ctx.progress((i + 1) * 100 / len(STEPS), message, stage=stage)
    return {
        "record_id": record_id,
        "summary": f"a short summary of {record_id}",
        "entities": random.randint(1, 9),
        "attempts": ctx.attempt,
    }
